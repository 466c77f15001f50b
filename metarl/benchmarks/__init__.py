"""Benchmarks behind `metarl bench` (scripts in benchmarks/ call these)."""
