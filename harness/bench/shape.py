"""What a bench part applies and how often: the fields ``bench`` and ``bench --stages``
share, their checks, and the workload they make."""

from __future__ import annotations

import dataclasses

from harness.model.generator import Workload

#: the seed's ten topics
TOPICS = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Shape:
    events: int = 200_000
    #: events per transaction
    batch_size: int = 1000
    #: events per stream entry: with ``batch_size``, a consumer's read brings one batch
    entry_size: int = 1000
    duplicate_rate: float = 0.3
    payload_bytes: int = 100
    seed: int = 42
    #: rounds (``bench``: of each part, ratios taken of the medians, so that a burst of
    #: load from elsewhere on the machine moves one round) or passes (``--stages``: each
    #: step's best is reported)
    repeat: int = 3

    def __post_init__(self) -> None:
        for name in ("events", "batch_size", "entry_size", "repeat"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be ≥ 1, got {value:,}")

    def workload(self, events: int | None = None) -> Workload:
        """The workload of ``events`` events (default :attr:`events`) in this shape."""
        return Workload(
            events=self.events if events is None else events,
            duplicate_rate=self.duplicate_rate,
            topics=TOPICS,
            payload_bytes=self.payload_bytes,
            seed=self.seed,
        )
