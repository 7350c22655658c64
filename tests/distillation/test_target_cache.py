"""TeacherTargetCache: per-sample slices stored on the CPU, read back stacked in the asked order."""

from __future__ import annotations

import pytest
import torch

from pipeline.distillation.target_cache import TeacherTargetCache


def _batch():
    return {"logits": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "stage1": torch.arange(8.0).reshape(2, 4)}


def test_put_then_get_returns_the_samples_in_the_order_asked():
    cache = TeacherTargetCache()
    cache.put([("a", 0), ("b", 1)], _batch())
    assert len(cache) == 2
    got = cache.get([("b", 1), ("a", 0), ("b", 1)], torch.device("cpu"))
    assert set(got) == {"logits", "stage1"}
    assert got["logits"].tolist() == [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]
    assert got["stage1"].tolist() == [[4.0, 5.0, 6.0, 7.0], [0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    assert (cache.hits, cache.misses) == (1, 0)


def test_a_batch_with_any_unknown_sample_or_no_sample_is_a_miss():
    cache = TeacherTargetCache()
    cache.put([("a", 0), ("b", 1)], _batch())
    assert cache.get([("a", 0), ("a", 1)], torch.device("cpu")) is None  # same id, other artifact state
    assert cache.get([], torch.device("cpu")) is None
    assert (cache.hits, cache.misses) == (0, 2)


def test_stored_targets_are_detached_cpu_copies_unaffected_by_later_changes():
    cache = TeacherTargetCache()
    batch = _batch()
    batch["logits"].requires_grad_(True)
    cache.put([("a", 0), ("b", 1)], batch)
    with torch.no_grad():
        batch["logits"].mul_(0)
        batch["stage1"].add_(100)
    stored = dict(cache.items())
    assert set(stored) == {("a", 0), ("b", 1)}
    assert stored[("a", 0)]["logits"].tolist() == [1.0, 2.0]
    assert stored[("b", 1)]["stage1"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert all(not t.requires_grad and t.device.type == "cpu" for v in stored.values() for t in v.values())
    # each slice is its own tensor, not a view that keeps the whole batch alive
    assert stored[("a", 0)]["stage1"].untyped_storage().nbytes() == 4 * 4


def test_putting_a_key_again_replaces_its_targets():
    cache = TeacherTargetCache()
    cache.put([("a", 0)], {"logits": torch.tensor([[1.0, 1.0]])})
    cache.put([("a", 0)], {"logits": torch.tensor([[2.0, 2.0]])})
    assert len(cache) == 1
    assert cache.get([("a", 0)], torch.device("cpu"))["logits"].tolist() == [[2.0, 2.0]]


def test_hits_and_misses_are_counted_per_batch():
    cache = TeacherTargetCache()
    cache.put([("a", 0)], {"logits": torch.tensor([[1.0, 1.0]])})
    for _ in range(3):
        cache.get([("a", 0)], torch.device("cpu"))
    cache.get([("b", 0)], torch.device("cpu"))
    cache.get([("b", 0)], torch.device("cpu"))
    assert (cache.hits, cache.misses) == (3, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_targets_are_kept_on_the_cpu_and_read_onto_the_batch_s_device():
    cache = TeacherTargetCache()
    cache.put([("a", 0), ("b", 1)], {n: t.cuda() for n, t in _batch().items()})
    assert all(t.device.type == "cpu" for v in dict(cache.items()).values() for t in v.values())
    got = cache.get([("b", 1)], torch.device("cuda"))
    assert got["logits"].device.type == "cuda" and got["logits"].tolist() == [[3.0, 4.0]]
