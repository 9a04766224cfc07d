"""Loads the named SQL blocks of ``harness/store/sql/*.sql``."""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


def parse(text: str) -> dict[str, tuple[str, ...]]:
    """Blocks by name; each block is its statements, comment lines removed.

    A block runs from its ``-- name --`` line to the next one; statements inside it
    end with ``;`` at the end of a line. ``{other}`` in a block stands for the text of
    block ``other``, so that statements can share a fragment.
    """
    blocks: dict[str, tuple[str, ...]] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=False):
        name = header.group(1)
        if name in blocks:
            raise ValueError(f"SQL block {name!r} is defined twice")
        body = text[header.end() : following.start() if following else len(text)]
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        statements = tuple(
            s.strip() for s in re.split(r";[ \t]*$", "\n".join(lines), flags=re.M) if s.strip()
        )
        if not statements:
            raise ValueError(f"SQL block {name!r} is empty")
        blocks[name] = statements
    return {
        name: tuple(_expand(s, blocks, (name,)) for s in stmts) for name, stmts in blocks.items()
    }


_REFERENCE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _expand(statement: str, blocks: dict[str, tuple[str, ...]], seen: tuple[str, ...]) -> str:
    """``statement`` with each ``{name}`` replaced by block ``name``'s text."""

    def text(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in blocks:
            raise ValueError(f"SQL block {seen[0]!r} refers to {{{name}}}, which is no block")
        if name in seen:
            raise ValueError(f"SQL block {name!r} refers to itself")
        (fragment,) = blocks[name]
        return _expand(fragment, blocks, (*seen, name))

    return _REFERENCE.sub(text, statement)


@functools.cache
def load(filename: str = "queries.sql") -> dict[str, tuple[str, ...]]:
    return parse(resources.files("harness.store").joinpath("sql", filename).read_text("utf-8"))


@functools.cache
def schema() -> str:
    return resources.files("harness.store").joinpath("sql", "schema.sql").read_text("utf-8")
