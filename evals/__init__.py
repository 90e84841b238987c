"""Family-specific metrics of evaluate.py: one module per model family / dataset."""
