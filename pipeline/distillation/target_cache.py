"""Cache of the teacher's per-sample distillation targets (probe logits, attention maps...)."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch


class TeacherTargetCache:
    """Keep each sample's teacher targets once computed, keyed by (sample id, artifact state).

    Valid only when the student's input for a sample never changes between epochs: no random
    augmentation after the deterministic, per-sample-seeded artifact injection. Targets live on
    the CPU (as computed: float32, or float16 under AMP) and are moved to the batch's device when read.
    """

    def __init__(self) -> None:
        self._store: dict[Hashable, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def items(self):
        """(key, targets) of every cached sample, targets on the CPU (for inspection)."""
        return self._store.items()

    def get(self, keys: Sequence[Hashable], device: torch.device) -> dict[str, torch.Tensor] | None:
        """Stacked targets for ``keys`` if every key is cached, else None."""
        if not keys or any(k not in self._store for k in keys):
            self.misses += 1
            return None
        self.hits += 1
        names = self._store[keys[0]].keys()
        return {
            n: torch.stack([self._store[k][n] for k in keys]).to(device, non_blocking=True) for n in names
        }

    def put(self, keys: Sequence[Hashable], targets: Mapping[str, torch.Tensor]) -> None:
        """Store the per-sample slices of batched ``targets``."""
        cpu = {n: t.detach().to("cpu") for n, t in targets.items()}
        for index, key in enumerate(keys):
            self._store[key] = {n: t[index].clone() for n, t in cpu.items()}
