"""Benchmarks for the model and app paths: ``python -m bench``."""
