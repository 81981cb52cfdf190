"""Evaluation: feature caches, every method's metrics from them, and scoring a finished run."""
