"""Developer and user tools; run each from the clone root as `python -m scripts.NAME` (see README)."""
