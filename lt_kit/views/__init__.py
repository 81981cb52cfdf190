"""What a notebook shows: figures, the alpha explorer, the post-hoc comparison, notebook helpers."""
