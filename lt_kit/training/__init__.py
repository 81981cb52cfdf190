"""Training: the loop, ``fit`` (a whole run into a run dir), the fast step, precision, distributed."""
