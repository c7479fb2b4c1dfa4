"""`serving.app.settle_heap`: a loaded model's objects leave the cyclic collector's
reach, and the next call (a model swap) collects what was dropped meanwhile."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from serving.app import settle_heap


class Node:
    """Stands in for a model's objects: a reference cycle, freed only by the collector."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process's collector as it was


def test_settled_objects_are_skipped_until_the_next_settle(unfrozen: None) -> None:
    old = Node()
    ref = weakref.ref(old)
    settle_heap()
    assert gc.get_freeze_count() > 0
    del old
    gc.collect()
    assert ref() is not None  # frozen: a full collection does not walk it
    settle_heap()  # a new model is loaded: the old one's cycles go
    assert ref() is None


def test_objects_made_after_settling_are_collected_as_before(unfrozen: None) -> None:
    settle_heap()
    new = Node()
    ref = weakref.ref(new)
    del new
    gc.collect()
    assert ref() is None
