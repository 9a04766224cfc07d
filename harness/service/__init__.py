"""The aggregator as an HTTP service: the FastAPI app, its ingress and the process that
serves it.
"""
