"""Pure functions: the maths the trainer, the notebooks and the tests share (no I/O, no state)."""
