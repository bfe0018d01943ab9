"""The keys of the contacts seen so far in this run: to skip repeats, and to find who left the export."""
from __future__ import annotations

import numpy as np


class SeenKeys:
    """A growing set of 64-bit keys kept as a few sorted arrays (8 bytes a key, where a Python set takes ~70).

    Arrays of similar size are merged, so there are only ~log2(n / chunk) of them to search, up to
    ``MAX_MERGED`` keys: a merge briefly holds its inputs and its output, so merging without a cap would
    briefly need a second copy of every key seen. Past the cap there is one more array to search per
    ``MAX_MERGED`` keys.
    """

    MAX_MERGED = 1 << 20

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys``; returns a mask of those not seen before (the first of repeats within ``keys``)."""
        fresh = np.zeros(len(keys), bool)
        fresh[np.unique(keys, return_index=True)[1]] = True
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, keys), len(level) - 1)
            fresh &= level[pos] != keys
        if fresh.any():  # an empty array would break the searches above (a chunk of nothing but repeats)
            self._push(np.sort(keys[fresh]))
        return fresh

    def _push(self, keys: np.ndarray) -> None:
        self._levels.append(keys)
        while (len(self._levels) > 1 and len(self._levels[-2]) <= 2 * len(self._levels[-1])
               and len(self._levels[-2]) + len(self._levels[-1]) <= self.MAX_MERGED):
            newer, older = self._levels.pop(), self._levels.pop()
            # Both are sorted and share no key: inserting one into the other makes one new array, where
            # concatenating and then sorting would make two.
            self._levels.append(np.insert(older, np.searchsorted(older, newer), newer))

    def sorted(self) -> np.ndarray:
        if not self._levels:
            return np.empty(0, np.uint64)
        return np.sort(np.concatenate(self._levels))

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    @property
    def nbytes(self) -> int:
        return sum(level.nbytes for level in self._levels)
