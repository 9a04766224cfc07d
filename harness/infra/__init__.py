"""The machine a run stands on: configuration, server health, embedded servers, a managed
redis-server, provenance, processes and ports.
"""
