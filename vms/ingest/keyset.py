"""Compact sets of keys for imports of millions of rows: 16 bytes a key, whatever the key's length.

An import must remember every device ID, name + position and record key it has seen (duplicates, removals)
while rows stream through in chunks. Python dicts of strings cost 150-300 bytes a key; here a key is its 64-bit
hash (Python's keyed SipHash, so files cannot be crafted to collide) in a sorted numpy array, with one int64
value (the line it was first seen on). Look-ups and additions go a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["HashIndex", "hash_keys"]

Int64s = npt.NDArray[np.int64]


def hash_keys(keys: Iterable[object]) -> Int64s:
    """The 64-bit hashes of ``keys`` (str, tuples of str and floats, ...)."""
    return np.fromiter((hash(k) for k in keys), dtype=np.int64)


class HashIndex:
    """Hash -> value (e.g. the first line a key was seen on); -1 means absent, so values must be >= 0."""

    def __init__(self) -> None:
        self._keys: Int64s = np.empty(0, dtype=np.int64)
        self._values: Int64s = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, hashes: Int64s) -> Int64s:
        """The value of each hash, or -1."""
        if not len(self._keys) or not len(hashes):
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self._keys, hashes)
        pos[pos == len(self._keys)] = 0
        found = self._keys[pos] == hashes
        return np.where(found, self._values[pos], -1)

    def contains(self, hashes: Int64s) -> npt.NDArray[np.bool_]:
        return self.lookup(hashes) >= 0

    def add(self, hashes: Int64s | Sequence[int], values: Int64s | Sequence[int] | None = None) -> None:
        """Add hashes not yet present (a hash already present keeps its first value)."""
        new = np.asarray(hashes, dtype=np.int64)
        vals = np.zeros(len(new), dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
        if not len(new):
            return
        order = np.argsort(new, kind="stable")
        new, vals = new[order], vals[order]
        first = np.ones(len(new), dtype=bool)
        first[1:] = new[1:] != new[:-1]  # a repeat inside this batch: the earliest (stable sort) stays
        new, vals = new[first], vals[first]
        if len(self._keys):
            absent = self.lookup(new) < 0
            new, vals = new[absent], vals[absent]
        at = np.searchsorted(self._keys, new)
        self._keys = np.insert(self._keys, at, new)
        self._values = np.insert(self._values, at, vals)
