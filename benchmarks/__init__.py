"""Side-by-side benchmarks of nni-bap (``python -m benchmarks``)."""
