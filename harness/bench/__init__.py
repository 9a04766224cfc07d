"""Benchmarks: the pipeline bench, its stages and CPU sampling, and the service bench with
k6 and its scripts.
"""
