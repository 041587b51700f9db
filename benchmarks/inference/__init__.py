"""In-process model against the same model on Triton: ``python -m benchmarks.inference``."""
