"""Frame sampling: slot assignment per element, training draws, eval positions, short clips."""

import numpy as np
import pytest

from sefar_fast.data.sampling import element_slots, eval_frames, num_slots_for, sample_frames
from sefar_fast.errors import SefarError

# Worked out by hand from the greedy rule (context first, slot j taken when free and j >= taken * K/n).
EXPECTED_SLOTS = {
    (2, 2, 4): [[3, 7], [1, 5], [0, 2, 4, 6]],
    (2, 4): [[1, 4], [0, 2, 3, 5]],
    (2, 2, 2, 4): [[4, 9], [2, 7], [1, 6], [0, 3, 5, 8]],
    (2, 2, 6): [[3, 8], [1, 6], [0, 2, 4, 5, 7, 9]],
    (2, 2, 8): [[4, 10], [1, 7], [0, 2, 3, 5, 6, 8, 9, 11]],
    (8,): [[0, 1, 2, 3, 4, 5, 6, 7]],
}


def segment_bounds(num_frames, k):
    """Independent segment bounds: numpy's round is also half-to-even."""
    edges = np.round(np.arange(k + 1) * (num_frames / k)).astype(int)
    return edges[:-1], edges[1:] - 1


@pytest.mark.parametrize("elements", list(EXPECTED_SLOTS))
def test_element_slots_match_hand_assignment(elements):
    assert element_slots(list(elements)) == EXPECTED_SLOTS[elements]


@pytest.mark.parametrize("elements", list(EXPECTED_SLOTS))
def test_slots_partition_the_clip_and_every_element_spans_it(elements):
    k = sum(elements)
    slots = element_slots(list(elements))
    assert sorted(s for el in slots for s in el) == list(range(k))
    for el, n in zip(slots, elements):
        assert el == sorted(el)
        # The i-th slot of an element lies in the i-th n-th of the clip or later, never before.
        assert all(s >= i * k / n for i, s in enumerate(el))
        assert el[-1] >= k - k / n  # and the element reaches the last part of the clip


@pytest.mark.parametrize("elements", list(EXPECTED_SLOTS))
@pytest.mark.parametrize("extra_frames", [0, 4, 5, 29, 92, 473])
def test_training_draws_stay_in_their_segments_and_cover_them(elements, extra_frames):
    k = sum(elements)
    num_frames = k + extra_frames
    flat_slots = np.array([s for el in EXPECTED_SLOTS[elements] for s in el])
    lo, hi = segment_bounds(num_frames, k)
    rng = np.random.default_rng(0)
    draws = np.stack([sample_frames(num_frames, list(elements), rng) for _ in range(400)])
    assert draws.dtype == np.int64 and draws.shape == (400, k)
    assert (draws >= lo[flat_slots]).all() and (draws <= hi[flat_slots]).all()
    if num_frames <= 37:  # small segments: every frame of each segment is drawn at least once
        for col, slot in enumerate(flat_slots):
            assert set(draws[:, col]) == set(range(lo[slot], hi[slot] + 1))


def test_eval_takes_segment_centres_in_element_order():
    # L = 80, K = 8: segments of 10 frames, centre lo + 5; slots in element order 3,7 | 1,5 | 0,2,4,6.
    assert sample_frames(80, [2, 2, 4]).tolist() == [35, 75, 15, 55, 5, 25, 45, 65]
    # L = 12: segments [0,1],[2,2],[3,3],[4,5],[6,7],[8,8],[9,9],[10,11] (half-to-even rounding).
    lo, hi = segment_bounds(12, 8)
    assert lo.tolist() == [0, 2, 3, 4, 6, 8, 9, 10] and hi.tolist() == [1, 2, 3, 5, 7, 8, 9, 11]
    centres = lo + (hi - lo + 1) // 2
    order = [3, 7, 1, 5, 0, 2, 4, 6]
    assert sample_frames(12, [2, 2, 4]).tolist() == centres[order].tolist()


def test_eval_views_spread_through_each_segment():
    views = np.stack([eval_frames(80, [2, 2, 4], t, 5) for t in range(5)])
    # Segment of slot 0 is frames 0..9; view t takes floor((t + 0.5) / 5 * 10) = 1, 3, 5, 7, 9.
    assert views[:, 4].tolist() == [1, 3, 5, 7, 9]
    assert (np.diff(views, axis=0) > 0).all()
    assert eval_frames(80, [2, 2, 4], 0, 1).tolist() == sample_frames(80, [2, 2, 4]).tolist()
    with pytest.raises(SefarError):
        eval_frames(80, [2, 2, 4], 5, 5)


@pytest.mark.parametrize("num_frames", range(1, 9))
def test_short_clips_follow_the_fallbacks(num_frames):
    elements = [2, 2, 4]
    rng = np.random.default_rng(num_frames)
    for frames in [sample_frames(num_frames, elements), *(sample_frames(num_frames, elements, rng) for _ in range(50))]:
        assert frames.shape == (8,)
        assert frames.min() >= 0 and frames.max() <= num_frames - 1
        for start, n in [(0, 2), (2, 2), (4, 4)]:
            assert (np.diff(frames[start : start + n]) >= 0).all()  # time order inside each element
    expected_slots = {1: 4, 2: 4, 3: 4, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8}
    assert num_slots_for(num_frames, elements) == expected_slots[num_frames]


def test_short_clip_cases_worked_by_hand():
    e = [2, 2, 4]
    # L < 4 (shorter than the context): frames repeat, slot k -> floor(k * L / 4).
    assert sample_frames(1, e).tolist() == [0] * 8
    assert sample_frames(2, e)[4:].tolist() == [0, 0, 1, 1]
    assert sample_frames(3, e)[4:].tolist() == [0, 0, 1, 2]
    # L = 4: context {0,1,2,3}; both fine elements fall back to one frame of {0,1} and one of {2,3}.
    assert sample_frames(4, e).tolist() == [1, 3, 1, 3, 0, 1, 2, 3]
    rng = np.random.default_rng(0)
    fine = np.stack([sample_frames(4, e, rng)[:4] for _ in range(200)])
    assert set(fine[:, 0]) == {0, 1} and set(fine[:, 1]) == {2, 3}
    # L = 6 (the reference facts' example): context {0,2,3,5}, fine element 1 {1,4}, fine element 0 random.
    assert sample_frames(6, e)[2:].tolist() == [1, 4, 0, 2, 3, 5]
    fine0 = np.stack([sample_frames(6, e, rng)[:2] for _ in range(200)])
    assert set(fine0[:, 0]) == {0, 1, 2} and set(fine0[:, 1]) == {3, 4, 5}


def test_same_seed_same_frames():
    a = [sample_frames(50, [2, 2, 4], np.random.default_rng(7)) for _ in range(2)]
    assert a[0].tolist() == a[1].tolist()


@pytest.mark.parametrize("bad", [[], [2, 0, 4], [2, -1], [2.5, 4], "24"])
def test_bad_elements_are_refused(bad):
    with pytest.raises(SefarError):
        element_slots(bad)


def test_empty_clip_is_a_clear_error():
    with pytest.raises(SefarError, match="at least 1"):
        sample_frames(0, [2, 2, 4])
