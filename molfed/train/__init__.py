"""Local training, evaluation and metrics."""
