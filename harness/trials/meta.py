"""A run folder's ``meta.json`` as one typed record, with the format's number and the one
step that brings an older folder up to it.

``Meta`` is written when a run starts and again when it ends
(:class:`harness.trials.results.RunWriter`); :func:`read` is the only way a folder's meta
is read back, and it upgrades older formats first (:func:`upgrade`), so no reader tests
for a key that an older run lacks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

#: Bumped when the columns or meta.json change meaning.
#: 2: the steady window's columns (``rate`` … ``not_sustained``); timeseries.csv a row per
#: second from the actors; the measured span ``elapsed_s`` (format 1 called it
#: ``duration_s``, a name now a trial parameter).
#: 3: meta.json is a :class:`Meta`, every field present (``mode`` included).
RESULTS_FORMAT = 3

Mode = Literal["sweep", "capacity"]
MODES: tuple[Mode, ...] = ("sweep", "capacity")

#: what format 1 called a ``trials.csv`` column, renamed since (see :data:`RESULTS_FORMAT`)
RENAMED_COLUMNS = {1: {"duration_s": "elapsed_s"}}


class MetaError(ValueError):
    """A meta.json this version cannot read: not JSON, a newer format, an unknown field."""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Meta:
    """What a run folder records of what produced it (docs/results-format.md)."""

    results_format: int = RESULTS_FORMAT
    #: what made the run: ``sweep`` (``harness run``) or ``capacity`` (``harness capacity``)
    mode: Mode = "sweep"
    started: str = dataclasses.field(default_factory=now_iso)
    #: empty until the run ends
    finished: str = ""
    #: ``complete`` or ``interrupted``; empty until the run ends
    status: str = ""
    quick: bool = False
    #: the experiment as resolved (:meth:`harness.trials.experiment.Experiment.to_dict`)
    experiment: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: a sweep's planned trials (:func:`harness.trials.results.resolved_trials`)
    resolved_trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: a capacity search's settings, the shares of capacity measured, their repetitions
    search: dict[str, Any] = dataclasses.field(default_factory=dict)
    fractions: list[float] = dataclasses.field(default_factory=list)
    repeat: int = 1
    #: the DSN and URL (passwords removed), the schema and key prefix
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the PostgreSQL and Redis server versions
    servers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the machine and the software (:func:`harness.infra.environment.describe`)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    argv: list[str] = dataclasses.field(default_factory=list)
    #: where Ray ran: ``ray_address``, ``ray_nodes``, ``ray_cpus``
    ray: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: trials run in this session
    trials_run: int = 0
    #: when each ``--resume`` started
    resumed: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MetaError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def is_capacity(self) -> bool:
        return self.mode == "capacity"

    @property
    def planned(self) -> set[str]:
        """The trial ids a sweep planned."""
        return {t["trial_id"] for t in self.resolved_trials}

    def replace(self, **changes: Any) -> Meta:
        """This meta with ``changes``; an unknown field is an error (``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Meta:
        """A meta from a meta.json's fields, upgraded first from an older format."""
        data = upgrade(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise MetaError(f"meta.json has fields this version does not know: {unknown}")
        return cls(**data)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a meta.json of any format up to :data:`RESULTS_FORMAT`, as the current
    format has them. The one upgrade step: formats 1 and 2 left ``mode`` out of a sweep;
    format 1 wrote no format number at all. (What format 1 called a column of
    ``trials.csv`` is :data:`RENAMED_COLUMNS`.)"""
    version = int(data.get("results_format", 1))
    if version > RESULTS_FORMAT:
        raise MetaError(
            f"results format {version} is newer than this harness reads ({RESULTS_FORMAT}); "
            "update the harness"
        )
    return {**data, "results_format": version, "mode": data.get("mode", "sweep")}


def read(directory: Path) -> Meta:
    """A run folder's meta, upgraded; a clear error when the folder has none."""
    path = directory / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a run folder (no meta.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetaError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MetaError(f"{path} holds no JSON object")
    return Meta.from_dict(data)


def write(directory: Path, meta: Meta) -> None:
    (directory / "meta.json").write_text(meta.to_json())
