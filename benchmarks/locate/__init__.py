"""Benchmark of screen-point localization (sync.locate) against the screenpoint baseline."""
