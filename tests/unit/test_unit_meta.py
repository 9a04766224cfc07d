"""harness.trials.meta: meta.json as a typed record, and older folders read through one
upgrade step."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.trials import meta, results
from harness.trials.meta import RESULTS_FORMAT, Meta, MetaError

REPO = Path(__file__).resolve().parents[2]
#: a reference run written in results format 1 (kept as it was made)
FORMAT_1 = REPO / "results" / "scale" / "reference"


def test_a_meta_is_written_and_read_back_unchanged(tmp_path: Path) -> None:
    written = Meta(
        mode="capacity",
        quick=True,
        experiment={"name": "x", "params": {"consumers": 2}},
        search={"tolerance": 0.1},
        fractions=[0.5, 0.9],
        repeat=3,
        argv=["harness", "capacity", "x"],
    ).replace(status="complete", trials_run=4)
    meta.write(tmp_path, written)
    assert meta.read(tmp_path) == written
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk["results_format"] == RESULTS_FORMAT
    assert {f for f in on_disk} == {f.name for f in dataclasses.fields(Meta)}


def test_a_field_meta_does_not_have_cannot_be_set() -> None:
    with pytest.raises(TypeError):
        Meta().replace(colour="blue")


def test_format_2_without_a_mode_is_read_as_a_sweep() -> None:
    upgraded = Meta.from_dict({"results_format": 2, "started": "t", "status": "complete"})
    assert (upgraded.mode, upgraded.results_format, upgraded.status) == ("sweep", 2, "complete")
    assert not upgraded.is_capacity


def test_a_meta_without_a_format_number_is_format_1() -> None:
    assert Meta.from_dict({"started": "t"}).results_format == 1


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"results_format": RESULTS_FORMAT + 1}, "newer than this harness reads"),
        ({"results_format": 2, "colour": "blue"}, "does not know: ['colour']"),
        ({"results_format": 3, "mode": "burst"}, "mode must be one of sweep, capacity"),
    ],
)
def test_a_meta_this_version_cannot_read_says_why(data: dict[str, object], says: str) -> None:
    with pytest.raises(MetaError, match=re.escape(says)):
        Meta.from_dict(data)


@pytest.mark.parametrize(("text", "says"), [("{not json", "is not JSON"), ("[]", "no JSON object")])
def test_a_broken_meta_json_is_a_clear_error(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "meta.json").write_text(text)
    with pytest.raises(MetaError, match=says):
        meta.read(tmp_path)


def test_a_folder_without_meta_json_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        results.load(tmp_path)


def test_a_format_1_run_loads_with_its_columns_renamed() -> None:
    """The kept format-1 reference run: its measured span, ``duration_s`` then, reads as
    ``elapsed_s``, and its meta as a sweep."""
    raw = json.loads((FORMAT_1 / "meta.json").read_text())
    assert raw["results_format"] == 1 and "mode" not in raw
    run = results.load(FORMAT_1)
    assert run.meta.results_format == 1 and run.mode == "sweep"
    assert "elapsed_s" in run.trials and "duration_s" not in run.trials
    assert (run.trials["elapsed_s"] > 0).all()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_run_cannot_be_resumed_and_is_left_as_it_was(tmp_path: Path, version: int) -> None:
    """Its trials.csv has other columns (format 2: no ``role``), so rows of this format
    would not fit under its header."""
    folder = tmp_path / "old"
    shutil.copytree(FORMAT_1, folder)
    if version == 2:
        data = {**json.loads((folder / "meta.json").read_text()), "results_format": 2}
        (folder / "meta.json").write_text(json.dumps(data))
    before = (folder / "meta.json").read_text()
    with pytest.raises(MetaError, match=f"results format {version}.*cannot be resumed"):
        results.RunWriter.resume(folder)
    assert (folder / "meta.json").read_text() == before


def test_a_resumed_run_records_when_it_was_resumed(tmp_path: Path) -> None:
    meta.write(tmp_path, Meta(started="t"))
    writer, recorded = results.RunWriter.resume(tmp_path)
    assert recorded == set()
    again = meta.read(tmp_path)
    assert again.results_format == RESULTS_FORMAT and again.mode == "sweep"
    assert len(again.resumed) == 1
    writer.finish(status="complete", trials_run=0)
    assert meta.read(tmp_path).status == "complete" and meta.read(tmp_path).finished


def test_an_older_run_gets_its_roles_from_its_rates() -> None:
    run = results.load(FORMAT_1)
    assert list(run.trials.columns).index("role") == list(run.trials.columns).index("seed") + 1
    assert set(run.trials["role"]) == {"burst"}
