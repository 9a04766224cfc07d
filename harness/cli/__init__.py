"""The command line: one module per command over shared plumbing."""
