"""The workload generator: deterministic, sliceable, and honest about its ground truth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import orjson
import pytest

from harness.model import events
from harness.model.generator import CHUNK, Generator, Workload, topic_name
from harness.pipeline.publisher import PublishPlan

# More than two chunks, so that slices cross both CHUNK boundaries.
BIG = 150_000


def _first_occurrence(ordinals: np.ndarray) -> np.ndarray:
    """True where an ordinal appears for the first time in the sequence."""
    _, first_index = np.unique(ordinals, return_index=True)
    mask = np.zeros(len(ordinals), dtype=bool)
    mask[first_index] = True
    return mask


@pytest.fixture(scope="module")
def big() -> Generator:
    return Generator(Workload(events=BIG, duplicate_rate=0.3, topics=7, seed=11))


@pytest.fixture(scope="module")
def big_ordinals(big: Generator) -> np.ndarray:
    return big.ordinals()


# -- determinism ----------------------------------------------------------------------


def test_same_seed_gives_same_ordinals_and_events() -> None:
    workload = Workload(events=3_000, duplicate_rate=0.4, topics=5, seed=9)
    a, b = Generator(workload), Generator(workload)
    assert np.array_equal(a.ordinals(), b.ordinals())
    assert list(a.events()) == list(b.events())
    assert a.expected_unique == b.expected_unique


def test_different_seed_gives_different_sequence() -> None:
    a = Generator(Workload(events=3_000, duplicate_rate=0.4, topics=5, seed=1))
    b = Generator(Workload(events=3_000, duplicate_rate=0.4, topics=5, seed=2))
    assert not np.array_equal(a.ordinals(), b.ordinals())
    # event ids carry the seed, so even the fresh events of two seeds never collide
    keys_a = {(e["topic"], e["event_id"]) for e in a.events()}
    keys_b = {(e["topic"], e["event_id"]) for e in b.events()}
    assert keys_a.isdisjoint(keys_b)


# -- ground truth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "rate", "topics"),
    [(0, 0.3, 3), (1, 0.5, 1), (500, 0.0, 4), (5_000, 0.3, 10), (CHUNK + 4_000, 0.6, 13)],
)
def test_ground_truth_matches_the_emitted_events(n: int, rate: float, topics: int) -> None:
    gen = Generator(Workload(events=n, duplicate_rate=rate, topics=topics, seed=3))
    emitted = list(gen.events())
    keys = [(e["topic"], e["event_id"]) for e in emitted]
    assert len(emitted) == gen.total == n
    assert gen.expected_unique == len(set(keys))
    expected = list(gen.expected_keys())
    assert len(expected) == len(set(expected)), "expected_keys() repeats a key"
    assert set(expected) == set(keys)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.95])
def test_ground_truth_of_many_tiny_workloads(rate: float) -> None:
    # tiny workloads make the edges likely: a re-send among the first events, or after
    # the last fresh one
    for seed in range(150):
        n = 1 + seed % 23
        gen = Generator(Workload(events=n, duplicate_rate=rate, topics=3, seed=seed))
        ordinals = gen.ordinals()
        assert len(ordinals) == n
        assert sorted(set(ordinals.tolist())) == list(range(gen.expected_unique)), seed
        assert {(e["topic"], e["event_id"]) for e in gen.events()} == set(gen.expected_keys())


def test_expected_keys_are_in_ordinal_order() -> None:
    gen = Generator(Workload(events=2_000, duplicate_rate=0.3, topics=4, seed=5))
    assert list(gen.expected_keys()) == [gen.key(u) for u in range(gen.expected_unique)]


def test_topics_are_the_workloads_topics() -> None:
    gen = Generator(Workload(events=4_000, duplicate_rate=0.2, topics=12, seed=5))
    used = {e["topic"] for e in gen.events()}
    assert used <= {topic_name(i) for i in range(12)}
    assert len(used) > 1


def test_generated_events_are_valid() -> None:
    gen = Generator(Workload(events=1_000, duplicate_rate=0.3, topics=12, seed=8))
    for event in gen.events():
        assert events.validate(event).to_dict() == event


def test_every_accepted_workload_generates_valid_events() -> None:
    payload_bytes = events.MAX_PAYLOAD_BYTES + 1_000
    try:
        gen = Generator(
            Workload(events=1, duplicate_rate=0.0, topics=1, payload_bytes=payload_bytes)
        )
    except ValueError:
        return  # rejecting such a workload up front is a fine answer
    events.validate(next(gen.events()))


# -- slices ---------------------------------------------------------------------------


def test_slices_over_arbitrary_cut_points_concatenate_to_the_whole(
    big: Generator, big_ordinals: np.ndarray
) -> None:
    rng = np.random.default_rng(1234)
    around_chunks = [c + d for c in (CHUNK, 2 * CHUNK) for d in (-1, 0, 1)]
    random_cuts = rng.integers(1, BIG, size=8).tolist()
    cuts = sorted({0, 1, BIG - 1, BIG, *around_chunks, *random_cuts})
    parts = [big.ordinals(a, b) for a, b in itertools.pairwise(cuts)]
    assert sum(len(p) for p in parts) == BIG
    assert np.array_equal(np.concatenate(parts), big_ordinals)


def test_a_slice_across_a_chunk_boundary_equals_the_same_range_of_the_whole(
    big: Generator, big_ordinals: np.ndarray
) -> None:
    for start, stop in [(CHUNK - 10, CHUNK + 10), (CHUNK - 1, 2 * CHUNK + 1), (5, BIG - 5)]:
        assert np.array_equal(big.ordinals(start, stop), big_ordinals[start:stop])
    events_slice = list(big.events(CHUNK - 3, CHUNK + 3))
    assert events_slice == [big.event(u) for u in big_ordinals[CHUNK - 3 : CHUNK + 3].tolist()]


def test_empty_and_clamped_slices(big: Generator, big_ordinals: np.ndarray) -> None:
    assert len(big.ordinals(10, 10)) == 0
    assert len(big.ordinals(20, 10)) == 0
    assert len(big.ordinals(BIG, BIG + 100)) == 0
    assert np.array_equal(big.ordinals(BIG - 7, BIG + 1_000), big_ordinals[BIG - 7 :])


def test_expected_unique_across_chunks_counts_distinct_ordinals(
    big: Generator, big_ordinals: np.ndarray
) -> None:
    assert big.expected_unique == len(np.unique(big_ordinals))
    assert set(np.unique(big_ordinals).tolist()) == set(range(big.expected_unique))


# -- duplicates -----------------------------------------------------------------------


def test_duplicates_are_resends_of_earlier_fresh_events(big_ordinals: np.ndarray) -> None:
    fresh = _first_occurrence(big_ordinals)
    fresh_before = np.cumsum(fresh) - fresh
    # a fresh event gets the next ordinal; a re-send points at one already sent
    assert np.array_equal(big_ordinals[fresh], fresh_before[fresh])
    assert np.all(big_ordinals[~fresh] < fresh_before[~fresh])
    assert np.all(big_ordinals >= 0)
    assert fresh[0]


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.9])
def test_duplicate_fraction_is_close_to_the_rate(rate: float) -> None:
    n = 200_000
    ordinals = Generator(Workload(events=n, duplicate_rate=rate, topics=3, seed=21)).ordinals()
    dups = n - len(np.unique(ordinals))
    # Event 0 is always fresh, the other n-1 are re-sends independently with probability
    # `rate`: dups ~ Binomial(n-1, rate). Six standard deviations: a false failure has
    # probability ~1e-9 for a random seed (and the seed is fixed, so never flaky).
    mean = (n - 1) * rate
    sd = math.sqrt((n - 1) * rate * (1 - rate))
    assert abs(dups - mean) <= 6 * sd, (dups, mean, sd)


def test_resend_targets_are_uniform_over_earlier_fresh_events(big_ordinals: np.ndarray) -> None:
    fresh = _first_occurrence(big_ordinals)
    fresh_before = (np.cumsum(fresh) - fresh)[~fresh]
    # A uniform pick among s earlier events: (pick + 0.5) / s has mean exactly 1/2 and
    # variance ≤ 1/12; the mean of d of them is within 6·sqrt(1/(12 d)) of 1/2.
    relative = (big_ordinals[~fresh] + 0.5) / fresh_before
    d = len(relative)
    assert abs(relative.mean() - 0.5) <= 6 * math.sqrt(1 / (12 * d))


def test_resend_targets_are_uniform_when_few_events_were_sent() -> None:
    # Right after the start a re-send chooses among s = 1, 2, 3 … fresh events; every
    # one of them, the most recent included, must come up with frequency 1/s.
    picks: dict[int, list[int]] = {s: [0] * s for s in (2, 3, 4)}
    for seed in range(600):
        ordinals = Generator(Workload(events=8, duplicate_rate=0.5, topics=1, seed=seed)).ordinals()
        fresh = _first_occurrence(ordinals)
        fresh_before = np.cumsum(fresh) - fresh
        for ordinal, s in zip(ordinals[~fresh], fresh_before[~fresh], strict=True):
            if s in picks:
                picks[int(s)][int(ordinal)] += 1
    for s, counts in picks.items():
        total = sum(counts)
        assert total > 100, (s, total)
        expected, sd = total / s, math.sqrt(total * (1 / s) * (1 - 1 / s))
        assert all(abs(c - expected) <= 6 * sd for c in counts), (s, counts)


def test_zero_duplicate_rate_gives_all_distinct() -> None:
    n = CHUNK + 100
    gen = Generator(Workload(events=n, duplicate_rate=0.0, topics=4, seed=6))
    assert np.array_equal(gen.ordinals(), np.arange(n))
    assert gen.expected_unique == n


def test_resends_are_byte_identical_to_their_originals() -> None:
    gen = Generator(Workload(events=5_000, duplicate_rate=0.5, topics=6, seed=13))
    first: dict[tuple[str, str], bytes] = {}
    resends = 0
    for event in gen.events():
        encoded = orjson.dumps(event)
        key = (event["topic"], event["event_id"])
        if key in first:
            resends += 1
            assert encoded == first[key]
        else:
            first[key] = encoded
    assert resends > 0


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"events": -1}, "events"),
        ({"duplicate_rate": -0.1}, "duplicate_rate"),
        ({"duplicate_rate": 1.0}, "duplicate_rate"),
        ({"topics": 0}, "topics"),
        ({"seed": -1}, "seed"),
        ({"payload_bytes": -1}, "payload_bytes"),
    ],
)
def test_workload_rejects_invalid_values(kwargs: dict[str, float], field: str) -> None:
    values: dict[str, float] = {"events": 10, "duplicate_rate": 0.3, "topics": 2, **kwargs}
    with pytest.raises(ValueError, match=field):
        Workload(**values)  # type: ignore[arg-type]


def test_workload_accepts_boundary_values() -> None:
    Workload(events=0, duplicate_rate=0.0, topics=1, payload_bytes=0, seed=0)


# -- publisher slices -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 10, 20_000, BIG + 1])
@pytest.mark.parametrize("publishers", [1, 2, 3, 7])
def test_publish_plans_cover_all_events_contiguously(n: int, publishers: int) -> None:
    workload = Workload(events=n, duplicate_rate=0.3, topics=2)
    plans = PublishPlan.split(workload, publishers, entry_size=3)
    assert len(plans) == publishers
    assert plans[0].start == 0
    assert plans[-1].stop == n
    for before, after in itertools.pairwise(plans):
        assert before.stop == after.start
    sizes = [p.stop - p.start for p in plans]
    assert all(s >= 0 for s in sizes)
    assert sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1, "slices should be near-equal"
    assert all(p.workload is workload and p.entry_size == 3 for p in plans)


def test_publish_plans_together_send_the_whole_workload(big: Generator) -> None:
    plans = PublishPlan.split(big.workload, 3)
    together = np.concatenate([big.ordinals(p.start, p.stop) for p in plans])
    assert np.array_equal(together, big.ordinals())


@pytest.mark.parametrize(
    "ordinal", [0, 1, 999, 1000, 59_999, 3_599_999, 86_399_999, 86_400_000, 10**9]
)
def test_the_fast_encoding_is_the_same_event(ordinal: int) -> None:
    import orjson

    gen = Generator(Workload(events=1, duplicate_rate=0.0, topics=13, payload_bytes=250, seed=9))
    assert orjson.loads(gen.encoded(ordinal)) == gen.event(ordinal)
    entry = orjson.loads(gen.encoded_entry([ordinal, ordinal + 1]))
    assert entry == [gen.event(ordinal), gen.event(ordinal + 1)]
    events.validate(gen.event(ordinal))


def test_timestamps_advance_one_millisecond_per_ordinal_across_days() -> None:
    import datetime as dt

    from harness.model.generator import timestamp

    for ordinal in (0, 86_399_999, 86_400_000, 86_400_001, 10**9):
        parsed = dt.datetime.fromisoformat(timestamp(ordinal))
        start = dt.datetime(2025, 12, 17, tzinfo=dt.UTC)
        assert parsed - start == dt.timedelta(milliseconds=ordinal)


@pytest.mark.parametrize(
    ("topics", "payload_bytes", "seed"), [(10, 100, 1), (13, 250, 9), (1, 0, 0), (64, 40, 2**31)]
)
def test_an_entry_encoded_in_bulk_is_its_events_encoded_one_by_one(
    topics: int, payload_bytes: int, seed: int
) -> None:
    gen = Generator(
        Workload(
            events=20_000, duplicate_rate=0.3, topics=topics, payload_bytes=payload_bytes, seed=seed
        )
    )
    ords = gen.ordinals()
    parts = [ords[i : i + n] for i, n in ((0, 100), (97, 1), (5_000, 333), (19_990, 10))]
    # across midnight (the slow path) and an empty entry too
    parts += [np.array([86_399_999, 86_400_000]), np.array([], dtype=np.int64)]
    for part in parts:
        one_by_one = b"[" + b",".join(gen.encoded(int(u)) for u in part) + b"]"
        assert gen.encoded_entry(part) == one_by_one
        assert gen.encoded_entry(part.tolist()) == one_by_one


@pytest.mark.parametrize(
    ("start", "stop", "size"), [(0, 25_000, 1000), (100, 23_000, 1000), (5, 6, 7)]
)
def test_ordinal_groups_are_the_chunks_regrouped(start: int, stop: int, size: int) -> None:
    g = Generator(Workload(events=25_000, duplicate_rate=0.3, topics=10, seed=1))
    groups = list(g.ordinal_groups(start, stop, size))
    assert [u for group in groups for u in group] == [
        int(u) for chunk in g.ordinal_chunks(start, stop) for u in chunk
    ]
    assert all(len(group) == size for group in groups[:-1])
    assert 0 < len(groups[-1]) <= size
