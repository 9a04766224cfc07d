"""PostgreSQL: the schema, the named SQL blocks, and the one store class that applies
batches exactly once.
"""
