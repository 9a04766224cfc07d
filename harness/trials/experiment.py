"""Experiments as TOML files: base parameters, sweep axes, repetitions, a seed.

``experiments/NAME.toml``::

    description = "one line for `harness list`"
    seed = 42
    repeat = 1

    [params]          # any TrialParams field; the rest keep their defaults
    consumers = 4

    [sweep]           # the cartesian product of these axes, in this order
    isolation = ["read_committed", "serializable"]
    consumers = [1, 2, 4]

    [[cases]]         # optional: settings that go together, each crossed with the sweep
    fault = "pg-failover"
    pg_standby = "sync"
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.trials import faults
from harness.trials.params import FIELDS, ExperimentError, Trial, TrialParams, coerce, whole

__all__ = ["FIELDS", "Experiment", "ExperimentError", "Trial", "TrialParams", "coerce"]

#: The figures a ``[reference]`` may give, by the trials.csv column they compare with.
REFERENCE_METRICS = {
    "steady_eps": "events/s committed",
    "steady_p50_ms": "latency p50 (ms)",
    "steady_p95_ms": "latency p95 (ms)",
    "steady_p99_ms": "latency p99 (ms)",
    "offered_eps": "events/s offered",
}


#: the shortest load ``--quick`` leaves an open-loop trial: 2 s measured after 1 s warm-up
QUICK_LOAD_S = 3.0
#: the most events ``--quick`` lets an open-loop trial offer: a few seconds' work here
QUICK_MAX_EVENTS = 30_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    name: str
    description: str = ""
    seed: int = 0
    repeat: int = 1
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sweep: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    #: settings that only make sense together (a fault and the setting that makes it safe
    #: or not), each a table of parameters: every case is crossed with the sweep
    #: (``[[cases]]`` in the file; none: the sweep alone)
    cases: Sequence[Mapping[str, Any]] = ()
    #: figures someone else published for the same set-up, to be set beside ours in the
    #: report: ``label`` (whose they are), optional ``source``, and any of
    #: :data:`REFERENCE_METRICS` (``[reference]`` in the file)
    reference: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.reference.items():
            if key in ("label", "source"):
                if not isinstance(value, str):
                    raise ExperimentError(f"reference {key} must be text, got {value!r}")
            elif key not in REFERENCE_METRICS:
                raise ExperimentError(
                    f"unknown reference figure {key!r}; known: label, source, "
                    + ", ".join(REFERENCE_METRICS)
                )
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ExperimentError(f"reference {key} must be a number, got {value!r}")
        if self.reference and "label" not in self.reference:
            raise ExperimentError("a [reference] needs a label: whose figures they are")
        if self.repeat < 1:
            raise ExperimentError(f"repeat must be ≥ 1, got {self.repeat}")
        if self.seed < 0:
            raise ExperimentError(f"seed must be ≥ 0, got {self.seed}")
        self._check_cases()
        for key in [*self.params, *self.sweep, *(k for case in self.cases for k in case)]:
            if key not in FIELDS:
                raise ExperimentError(
                    f"unknown parameter {key!r}; known: {', '.join(sorted(FIELDS))}"
                )
        for key, values in self.sweep.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ExperimentError(f"sweep axis {key!r} must be a non-empty list")
        list(self.trials())  # validate every combination now, not mid-run

    def _check_cases(self) -> None:
        for i, case in enumerate(self.cases, 1):
            if not isinstance(case, Mapping) or not case:
                raise ExperimentError(f"case {i} must be a non-empty table of key = value lines")
            both = sorted(set(case) & set(self.sweep))
            if both:
                raise ExperimentError(f"{both[0]!r} is both a sweep axis and set by case {i}")
        object.__setattr__(self, "cases", tuple(dict(case) for case in self.cases))

    @property
    def axes(self) -> list[str]:
        """What varies from trial to trial: the cases' settings, then the sweep's axes."""
        return list(dict.fromkeys([*(k for case in self.cases for k in case), *self.sweep]))

    def trials(self) -> Iterator[Trial]:
        """Each case crossed with the cartesian product of the sweep axes, each repeated
        ``repeat`` times."""
        axes = list(self.sweep.items())
        index = 0
        for case in self.cases or ({},):
            for combo in itertools.product(*(values for _, values in axes)):
                values = {
                    **self.params,
                    **case,
                    **dict(zip((k for k, _ in axes), combo, strict=True)),
                }
                params = TrialParams(**{k: coerce(k, v) for k, v in values.items()})
                for r in range(self.repeat):
                    yield Trial(index=index, repeat=r, seed=self.seed + r, params=params)
                    index += 1

    def with_overrides(self, assignments: Sequence[str]) -> Experiment:
        """Apply ``key=value`` overrides; ``key=a,b,c`` makes ``key`` a sweep axis. Either
        replaces what the cases set of ``key`` (cases left the same are run once)."""
        params, sweep = dict(self.params), dict(self.sweep)
        cases = [dict(case) for case in self.cases]
        top: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ExperimentError(f"--set needs key=value, got {assignment!r}")
            if key in ("seed", "repeat"):
                top[key] = whole(key, raw)
            elif key not in FIELDS:
                raise ExperimentError(
                    f"unknown parameter {key!r}; known: seed, repeat, {', '.join(sorted(FIELDS))}"
                )
            elif "," in raw:
                sweep[key] = [coerce(key, v.strip()) for v in raw.split(",") if v.strip()]
                params.pop(key, None)
            else:
                params[key] = coerce(key, raw.strip())
                sweep.pop(key, None)
            if key in FIELDS:
                cases = [{k: v for k, v in case.items() if k != key} for case in cases]
        unique = list({tuple(case.items()): case for case in cases if case}.values())
        return dataclasses.replace(self, params=params, sweep=sweep, cases=unique, **top)

    def quick(self, factor: int = 10, floor: int = 1000) -> Experiment:
        """The same sweep, once (no repetitions), with ``factor`` times fewer events (at
        least ``floor``); open-loop trials offer their rates for ``factor`` times less time
        (at least :data:`QUICK_LOAD_S`, with at most 1 s of warm-up), and where that still
        offers more than :data:`QUICK_MAX_EVENTS` events in a trial, every rate of the
        experiment is scaled down by the same factor (a saturated trial's drain would
        otherwise take longer than its load)."""
        params, sweep = dict(self.params), dict(self.sweep)
        cases = [dict(case) for case in self.cases]

        def each(name: str, change: Callable[[Any], Any]) -> None:
            """Change the swept values of ``name``, or its one value (default included),
            and the cases' values."""
            if name in sweep:
                sweep[name] = [change(v) for v in sweep[name]]
            else:
                params[name] = change(params.get(name, FIELDS[name].default))
            for case in cases:
                if name in case:
                    case[name] = change(case[name])

        def values(name: str) -> list[float]:
            return [float(v) for v in _values(params, sweep, cases, name)]

        each("events", lambda e: max(floor, int(coerce("events", e)) // factor))
        # Open-loop trials are as long as their load: shorten the load, keep the rates
        # unless a trial would still offer too many events.
        each("duration_s", lambda d: min(float(d), max(self._quick_floor_s(), float(d) / factor)))
        each("warmup_s", lambda w: min(float(w), 1.0))
        most = max(values("rate")) * max(values("duration_s"))
        if most > QUICK_MAX_EVENTS:
            each("rate", lambda r: round(float(r) * QUICK_MAX_EVENTS / most))
        return dataclasses.replace(self, params=params, sweep=sweep, cases=cases, repeat=1)

    def _quick_floor_s(self) -> float:
        """The shortest load ``--quick`` leaves: :data:`QUICK_LOAD_S`, or for faults that
        take a while (a pause, a failover), a warm-up second and twice each one's span,
        so that they land one after the other inside the load."""

        def every(name: str) -> list[Any]:
            return _values(self.params, self.sweep, self.cases, name)

        def largest(name: str) -> Any:
            return max(every(name), key=lambda v: coerce(name, v))

        kinds = [faults.fault(k) for k in every("fault")]
        idle = int(coerce("claim_idle_ms", largest("claim_idle_ms")))
        span = max(k.span_s(idle) for k in kinds)
        if not span:
            return QUICK_LOAD_S
        return max(QUICK_LOAD_S, 1.0 + 2 * int(coerce("faults", largest("faults"))) * span)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "repeat": self.repeat,
            "params": dict(self.params),
            "sweep": {k: list(v) for k, v in self.sweep.items()},
            "cases": [dict(case) for case in self.cases],
            "reference": dict(self.reference),
        }


def _values(
    params: Mapping[str, Any],
    sweep: Mapping[str, Sequence[Any]],
    cases: Sequence[Mapping[str, Any]],
    name: str,
) -> list[Any]:
    """Every value ``name`` takes in some trial: swept, or the one value (default
    included), and what the cases set."""
    one = params.get(name, FIELDS[name].default)
    return [*sweep.get(name, [one]), *(case[name] for case in cases if name in case)]


def load(path: Path) -> Experiment:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"no experiment file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {
        "description", "seed", "repeat", "params", "sweep", "cases", "reference"
    }  # fmt: skip
    if unknown:
        raise ExperimentError(f"{path}: unknown top-level keys {sorted(unknown)}")
    for table in ("params", "sweep", "reference"):
        if not isinstance(data.get(table, {}), dict):
            raise ExperimentError(f"{path}: [{table}] must be a table of key = value lines")
    try:
        return Experiment(
            name=path.stem,
            description=str(data.get("description", "")),
            seed=whole("seed", data.get("seed", 0)),
            repeat=whole("repeat", data.get("repeat", 1)),
            params=data.get("params", {}),
            sweep=data.get("sweep", {}),
            cases=_cases(data.get("cases", [])),
            reference=data.get("reference", {}),
        )
    except ExperimentError as exc:
        raise ExperimentError(f"{path}: {exc}") from None


def _cases(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(case, dict) for case in raw):
        raise ExperimentError("cases must be [[cases]] tables of key = value lines")
    return raw


def find(name: str, directory: Path) -> Path:
    """``NAME`` in ``directory``, or a path given directly."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    path = directory / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        raise ExperimentError(f"no experiment named {name!r} in {directory}/ (known: {known})")
    return path


def available(directory: Path) -> list[Experiment]:
    return [load(p) for p in sorted(directory.glob("*.toml"))]
