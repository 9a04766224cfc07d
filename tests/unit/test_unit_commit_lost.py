"""harness.trials.verify.commits_lost: lost events told apart by what consumers committed."""

from __future__ import annotations

import dataclasses

from harness.store.batch import Verification
from harness.trials.state import Outcome
from harness.trials.verify import commits_lost


def outcome(*committed: tuple[str, str]) -> Outcome:
    return dataclasses.replace(Outcome.failed(), ran=True, committed_keys=frozenset(committed))


def test_a_lost_event_a_consumer_had_committed_is_a_commit_taken_back() -> None:
    stored = Verification(8, 8, 2, 0, missing=(("t", "a"), ("t", "b")))
    assert commits_lost(stored, outcome(("t", "a"), ("t", "c"))) == 1


def test_nothing_lost_or_nothing_kept_is_nothing_taken_back() -> None:
    assert commits_lost(Verification(8, 8, 0, 0), outcome(("t", "a"))) == 0
    assert commits_lost(Verification(8, 8, 1, 0, missing=(("t", "a"),)), outcome()) == 0
