"""Per-epoch seeded shuffle of a source, random access, fast for small sources too.

grain's `MapDataset.shuffle` (index_shuffle, a cipher over the index) costs ~1 ms per index for a
50-record source and ~20 µs for 4k records, ~6 µs for 1M: fine for big sources, a bottleneck for
the small ones demos and fine-tuning mixes have. Up to `MAX_CACHED` records we keep numpy
permutations for the few epochs in use instead; beyond that grain's shuffle is used.
"""

from __future__ import annotations

import grain
import numpy as np

MAX_CACHED = 1 << 20  # 4 MB of int32 per cached epoch
_EPOCHS_CACHED = 4  # streams straddle at most a couple of epochs at a time


class EpochShuffle(grain.MapDataset):
  """Index e * n + i → parent[perm_e[i] + e * n]: a new permutation every epoch e (pass indices
  past len() after `.repeat()`, as grain's shuffle does)."""

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed, self._n = int(seed), len(parent)
    self._perms: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return self._n

  def _perm(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      if len(self._perms) >= _EPOCHS_CACHED:
        self._perms.pop(min(self._perms))
      perm = np.random.default_rng([self._seed, epoch]).permutation(self._n).astype(np.int32)
      self._perms[epoch] = perm
    return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, i = divmod(int(index), self._n)
    return self._parent[int(self._perm(epoch)[i]) + epoch * self._n]

  def __getstate__(self):  # workers rebuild permutations instead of receiving them
    return {**self.__dict__, "_perms": {}}

  def __str__(self) -> str:
    return f"EpochShuffle(seed={self._seed})"


def shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
  """Seeded per-epoch shuffle; put `.repeat()` after it."""
  if len(ds) <= MAX_CACHED:
    return EpochShuffle(ds, seed)
  return ds.shuffle(seed=seed % 2**32)
