"""The README as a front door and the MkDocs pages behind it, checked without building them.

`mkdocs build --strict` (in CI) checks the links between docs pages; these tests check
what it does not see: the README's length, its links (files and the headings they point
at), its two commands, the commands table against the CLI, and that mkdocs.yml's nav and
the pages under docs/ agree.
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

MAX_README_LINES = 200

FENCE = re.compile(r"^(```|~~~)(?P<info>[^\n]*)\n(?P<body>.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<text>.+?)[ \t#]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, …


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    return [m["target"].strip("<>") for m in LINK.finditer(prose(text))]


def slugify(text: str) -> str:
    """A heading's anchor as MkDocs makes it (Python-Markdown's ``toc`` default):
    inline markup dropped, ASCII only, lower case, runs of spaces and hyphens one hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text("utf-8"))  # a `# comment` in a code block is no heading
    return {slugify(m["text"]) for m in HEADING.finditer(text)}


def readme() -> str:
    return README.read_text("utf-8")


def test_the_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = len(readme().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; the reference goes to docs/"


def test_every_relative_link_in_the_readme_points_at_an_existing_file() -> None:
    broken = []
    for target in links(readme()):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve() if path else README
        if not file.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path or 'README.md'}")
    assert not broken, "README.md links to what is not there:\n" + "\n".join(broken)


def test_the_readme_links_to_files_inside_the_repository() -> None:
    outside = [
        t
        for t in links(readme())
        if not EXTERNAL.match(t)
        and not (README.parent / t.partition("#")[0]).resolve().is_relative_to(ROOT)
    ]
    assert not outside


def test_the_first_code_block_holds_the_two_commands() -> None:
    first = FENCE.search(readme())
    assert first is not None, "README.md has no fenced code block"
    assert first["info"].strip() in ("bash", "sh", "shell", "console")
    commands = [line.split("#")[0].strip() for line in first["body"].splitlines()]
    assert any("constraints.txt" in c for c in commands), commands
    assert any("python -m pytest" in c for c in commands), commands
    assert "pip install -c constraints.txt -e '.[dev]' && python -m harness run smoke" in commands
    assert (ROOT / "constraints.txt").is_file()


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("python -m harness has no subcommands")


def test_the_readme_lists_every_command_of_the_cli() -> None:
    listed = set(re.findall(r"^\| `python -m harness ([a-z-]+)", readme(), re.MULTILINE))
    assert listed == subcommands()


@pytest.fixture(scope="module")
def mkdocs() -> dict[str, Any]:
    config = yaml.safe_load(MKDOCS.read_text("utf-8"))
    assert isinstance(config, dict)
    return config


def nav_pages(entries: Any) -> Iterator[str]:
    """Every page a nav names: entries are a page, ``{title: page}`` or ``{title: [...]}``."""
    if isinstance(entries, str):
        if not EXTERNAL.match(entries):
            yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from nav_pages(value)


def excluded(config: dict[str, Any]) -> list[str]:
    """The folders ``exclude_docs`` leaves out (lines ending in ``/``)."""
    lines = str(config.get("exclude_docs") or "").splitlines()
    return [line.strip().strip("/") + "/" for line in lines if line.strip().endswith("/")]


def test_mkdocs_builds_docs_with_the_material_theme(mkdocs: dict[str, Any]) -> None:
    assert mkdocs["site_name"]
    assert mkdocs["docs_dir"] == "docs"
    assert mkdocs["theme"]["name"] == "material"


def test_every_page_under_docs_is_in_the_nav_and_every_nav_entry_exists(
    mkdocs: dict[str, Any],
) -> None:
    nav = list(nav_pages(mkdocs["nav"]))
    skip = excluded(mkdocs)
    pages = {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if not any(p.relative_to(DOCS).as_posix().startswith(s) for s in skip)
    }
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert sorted(set(nav) - pages) == [], "nav entries without a page"
    assert sorted(pages - set(nav)) == [], "pages missing from the nav"


def test_the_readme_links_to_every_docs_page(mkdocs: dict[str, Any]) -> None:
    linked = {t.partition("#")[0] for t in links(readme())}
    missing = [page for page in nav_pages(mkdocs["nav"]) if f"docs/{page}" not in linked]
    assert not missing


def test_the_slug_matches_what_mkdocs_makes() -> None:
    assert slugify("Under a steady load (open loop, 2026-11-30)") == (
        "under-a-steady-load-open-loop-2026-11-30"
    )
    assert slugify("Benches: `bench` and `service-bench`") == "benches-bench-and-service-bench"
    assert slugify("The seed's k6 load test") == "the-seeds-k6-load-test"


def toc_ids(tokens: list[dict[str, Any]]) -> Iterator[str]:
    for token in tokens:
        yield token["id"]
        yield from toc_ids(token["children"])


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_anchors_are_those_python_markdown_makes(page: str) -> None:
    markdown = pytest.importorskip("markdown")
    md = markdown.Markdown(extensions=["toc", "tables", "fenced_code"])
    md.convert((DOCS / page).read_text("utf-8"))
    assert set(toc_ids(md.toc_tokens)) == anchors(DOCS / page)
