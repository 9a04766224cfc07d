"""Named SQL blocks."""

from __future__ import annotations

import re

import pytest

from harness.store import queries

SYNTHETIC = "\n".join(
    [
        "-- preamble comment, before any block: ignored",
        "-- first --",
        "-- a comment inside the block",
        "SELECT 1",
        "FROM t",
        "",
        "-- second --",
        "DELETE FROM a;",
        "  -- indented comment",
        "INSERT INTO a VALUES (1); \t ",  # blanks after the ';' still end the statement
        "UPDATE a SET x = 'a;b' WHERE y = 2",
        "",
        "-- third_3 --",
        "SELECT %(p)s;",
        "",
    ]
)


def test_parse_splits_blocks_and_statements() -> None:
    blocks = queries.parse(SYNTHETIC)
    assert list(blocks) == ["first", "second", "third_3"]
    assert blocks["first"] == ("SELECT 1\nFROM t",)
    assert blocks["second"] == (
        "DELETE FROM a",
        "INSERT INTO a VALUES (1)",
        "UPDATE a SET x = 'a;b' WHERE y = 2",
    )
    assert blocks["third_3"] == ("SELECT %(p)s",)


def test_parse_drops_comment_lines() -> None:
    for statements in queries.parse(SYNTHETIC).values():
        for statement in statements:
            assert not any(line.lstrip().startswith("--") for line in statement.splitlines())


def test_parse_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- a --\nSELECT 1\n-- a --\nSELECT 2\n")


@pytest.mark.parametrize("body", ["", "\n\n", "-- only a comment\n", ";\n"])
def test_parse_rejects_empty_blocks(body: str) -> None:
    with pytest.raises(ValueError, match="'empty_one' is empty"):
        queries.parse(f"-- good --\nSELECT 1\n-- empty_one --\n{body}-- last --\nSELECT 2\n")


@pytest.mark.parametrize("text", ["", "SELECT 1;\n"], ids=["empty", "no-header"])
def test_parse_without_headers_is_empty(text: str) -> None:
    assert queries.parse(text) == {}


def test_load_returns_the_shipped_blocks() -> None:
    blocks = queries.load()
    assert {"insert_events", "apply_unnest", "reset", "read_counters"} <= set(blocks)
    assert len(blocks["insert_events"]) == 1
    assert len(blocks["apply_unnest"]) == 1
    assert len(blocks["reset"]) == 3
    for name, statements in blocks.items():
        assert statements, name
        assert all(s.strip() for s in statements), name
        assert not any(s.rstrip().endswith(";") for s in statements), name


def test_insert_events_takes_the_batch_columns() -> None:
    (insert,) = queries.load()["insert_events"]
    for column in ("topics", "event_ids", "timestamps", "sources", "payloads"):
        assert f"%({column})s" in insert
    assert "ON CONFLICT (topic, event_id) DO NOTHING" in insert


def test_schema_is_text() -> None:
    assert "processed_events" in queries.schema()


def test_a_block_may_use_another_as_a_fragment() -> None:
    text = "-- head --\nSELECT 1\n\n-- full --\n{head} + {tail}\n\n-- tail --\n2\n"
    assert queries.parse(text)["full"] == ("SELECT 1 + 2",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- a --\nSELECT {nope}\n", "refers to {nope}, which is no block"),
        ("-- a --\nSELECT {b}\n\n-- b --\n{a}\n", "refers to itself"),
    ],
)
def test_bad_fragment_references_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        queries.parse(text)
