"""The dual-level temporal elements: which of a clip's K = sum(elements) segments each one takes.

A clip is cut into K TSN segments ("slots"); every temporal element takes a subset of them.
The last element is the *context*, the others are *fine* elements. Slots are assigned
greedily, context first (as the released code), so that every element spans the whole clip:
for ``elements=[2, 2, 4]`` the context takes slots {0, 2, 4, 6}, fine element 1 takes {1, 5}
and fine element 0 takes {3, 7}. The clip layout lists the slots grouped by element in config
order, ascending inside each element; `time_order` puts that layout back in time order.

`data.sampling` turns slots into frame indices; `ops.views` reads the time order to perturb
the whole video across elements.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from sefar_fast.errors import SefarError


def check_elements(elements: Sequence[int]) -> tuple[int, ...]:
    try:
        elems = tuple(int(n) for n in elements)
    except (TypeError, ValueError):
        raise SefarError(f"elements={elements!r} must be a list of positive integers, e.g. [2, 2, 4]") from None
    if not elems or any(n < 1 or n != e for n, e in zip(elems, elements)):
        raise SefarError(f"elements={list(elements)!r} must be a non-empty list of positive integers, e.g. [2, 2, 4]")
    return elems


@lru_cache(maxsize=256)
def _greedy_slots(elements: tuple[int, ...], num_slots: int) -> tuple[tuple[int, ...] | None, ...]:
    """The deterministic part of the assignment; None marks an element that needs the fallback."""
    used = [False] * num_slots
    found: list[tuple[int, ...] | None] = [None] * len(elements)
    for e in reversed(range(len(elements))):  # context (last) first, as the released code
        n = elements[e]
        interval = num_slots / n
        taken: list[int] = []
        for j in range(num_slots):
            if len(taken) == n:
                break
            if not used[j] and j >= len(taken) * interval:
                taken.append(j)
        if len(taken) == n:
            for j in taken:
                used[j] = True
            found[e] = tuple(taken)
    return tuple(found)


def _fallback_slots(n: int, num_slots: int, rng: np.random.Generator | None) -> list[int]:
    """One slot per 1/n of the slots: random inside it (training) or its centre (eval)."""
    slots = []
    for i in range(n):
        lo = (i * num_slots) // n
        hi = max(((i + 1) * num_slots) // n - 1, lo)
        slots.append(int(rng.integers(lo, hi + 1)) if rng is not None else lo + (hi - lo + 1) // 2)
    return slots


def element_slots(
    elements: Sequence[int], num_slots: int | None = None, rng: np.random.Generator | None = None
) -> list[list[int]]:
    """Slots of each element, in config order, ascending inside each element.

    num_slots defaults to K = sum(elements). With fewer slots than K some elements
    cannot get distinct free slots; they take one slot per 1/n of the slots instead
    (random with `rng`, the middle slot without). ``element_slots([2, 2, 4])`` is
    ``[[3, 7], [1, 5], [0, 2, 4, 6]]``.
    """
    elems = check_elements(elements)
    num_slots = sum(elems) if num_slots is None else int(num_slots)
    if num_slots < 1:
        raise SefarError(f"num_slots={num_slots} must be at least 1")
    greedy = _greedy_slots(elems, num_slots)
    return [list(g) if g is not None else _fallback_slots(n, num_slots, rng) for g, n in zip(greedy, elems)]


def time_order(elements: Sequence[int]) -> np.ndarray:
    """Positions of the clip layout in time order: entry j is where the clip's j-th slot sits.
    [2, 2, 4] (layout: slots 3, 7 | 1, 5 | 0, 2, 4, 6) gives [4, 2, 5, 0, 6, 3, 7, 1].
    Computed once per element list (the views ask every step); the array is read-only."""
    return _time_order(check_elements(elements))


@lru_cache(maxsize=64)
def _time_order(elements: tuple[int, ...]) -> np.ndarray:
    slots = [s for element in element_slots(elements) for s in element]
    order = np.argsort(slots, kind="stable")
    order.flags.writeable = False
    return order
