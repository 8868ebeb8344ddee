"""Benchmarks of the pipeline and the origin; ``python -m benchmarks.run`` (``make bench``)."""
