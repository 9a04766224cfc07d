"""An idempotent pub-sub log aggregator and the Ray harness that measures it."""

__version__ = "0.1.0"
