"""Markdown for the reports: tables, values as the experiment files write them, and a
mean with its interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(map(cell, header)) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def values(values: Sequence[Any]) -> str:
    return ", ".join(value(plain(v)) for v in values)


def value(v: Any) -> str:
    """``20,000``; ``5,000`` for a rate of 5000.0; ``0.3`` as it is."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def plain(value: Any) -> Any:
    """numpy scalars as Python ones, so they format like the values in the experiment file."""
    return value.item() if hasattr(value, "item") else value


def cell(mean: float, half: float, n: int, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:,.{decimals}f}"
    return text if n < 2 or math.isnan(half) else f"{text} ± {half:,.{decimals}f}"
