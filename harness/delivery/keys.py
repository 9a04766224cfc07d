"""Every Redis key and consumer-group name the harness uses, in one place.

All keys start with a prefix (``Settings.key_prefix``) so that tests, trials and a
user's own data never share a key.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def stream(self) -> str:
        """The events stream (one entry holds one or more events)."""
        return f"{self.prefix}:events"

    @property
    def group(self) -> str:
        """The consumer group that applies the stream to PostgreSQL."""
        return f"{self.prefix}:appliers"

    @property
    def dead_letter(self) -> str:
        """Stream of entries or events that could not be stored, with the reason."""
        return f"{self.prefix}:dead-letter"

    @property
    def rejected(self) -> str:
        """Counter of events the HTTP service refused at ingress (all its processes)."""
        return f"{self.prefix}:rejected"

    @property
    def queue(self) -> str:
        """The seed's design: a plain list, RPUSH to publish, BLPOP to consume."""
        return f"{self.prefix}:queue"

    def client_name(self, role: str) -> str:
        """Redis CLIENT SETNAME of a connection, so that faults can find it."""
        return f"{self.prefix}:{role}"

    def all(self) -> tuple[str, ...]:
        return (self.stream, self.dead_letter, self.queue, self.rejected)
