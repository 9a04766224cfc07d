"""The harness: experiments and their trials, the runner's phases on Ray, faults,
invariants, capacity search and results.
"""
