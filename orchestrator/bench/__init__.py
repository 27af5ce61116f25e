"""Benchmark step (load points against a ready deployment), result normalization, sweep tables."""
