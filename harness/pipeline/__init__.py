"""The system's moving parts: the consumer, the Redis publisher and the HTTP publisher."""
