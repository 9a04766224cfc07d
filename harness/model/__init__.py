"""What the system is made of: events and their wire codec, the workload, the open-loop
schedule, retry policy, latency and steady-state windows, and the vocabulary of a
trial's modes. Imports nothing of the harness.
"""
