"""How events travel through Redis: the broker protocol, the stream and list brokers, and
every Redis key in one place.
"""
