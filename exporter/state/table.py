"""The sync state in memory: what ActiveCampaign confirmed for each contact, in key-sorted blocks."""
from __future__ import annotations

import numpy as np

from ..list_status import ListStatus
from .emails import EmailStore, PackedEmails
from .rows import StateRows

Block = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # keys, fingerprints, flags, email refs; by key
_BLOCK_TYPES = (np.uint64, np.uint64, np.uint8, np.uint32)


class SyncState:
    """What ActiveCampaign confirmed for this export: key, fingerprint, flag and email per contact.

    The table is a few blocks of up to ``2 * BLOCK`` contacts, each a set of arrays sorted by key (keys,
    fingerprints, flags, email positions), with each block's first key in an index; emails live in an
    append-only store. A run's confirmations are folded in every ``COMPACT_EVERY`` contacts: changed
    fingerprints are written in place and only blocks that gain keys are rebuilt, one at a time. Memory stays
    at ~21 bytes a contact plus the compressed email, and a fold never holds a second copy of the table (a
    table copied whole at every fold would set the run's memory peak).
    """

    COMPACT_EVERY = 65536
    BLOCK = 65536

    def __init__(self, base: StateRows | None = None) -> None:
        base = base or StateRows()
        order = np.argsort(base.keys, kind="stable")
        self._emails = EmailStore(base.emails)
        self._set_blocks(_split(*_writable(base.keys[order], base.fingerprints[order], base.flags[order],
                                           order.astype(np.uint32)), self.BLOCK))
        self._recent: list[StateRows] = []
        self._recent_count = 0  # contacts recorded and not folded in yet

    @classmethod
    def from_columns(cls, keys: np.ndarray, fingerprints: np.ndarray, flags: np.ndarray, refs: np.ndarray,
                     emails: PackedEmails | EmailStore) -> SyncState:
        """A state from key-sorted columns (copied where they are read-only: folds write fingerprints in place)."""
        state = cls()
        state._emails = emails if isinstance(emails, EmailStore) else EmailStore(emails)
        state._set_blocks(_split(*_writable(keys, fingerprints, flags, refs), cls.BLOCK))
        return state

    def _set_blocks(self, blocks: list[Block]) -> None:
        self._table = (tuple(blocks), np.array([block[0][0] for block in blocks], np.uint64))

    def _column(self, which: int) -> np.ndarray:
        blocks = self._table[0]
        if not blocks:
            return np.empty(0, _BLOCK_TYPES[which])
        return np.concatenate([block[which] for block in blocks])

    @property
    def keys(self) -> np.ndarray:
        return self._column(0)

    @property
    def fingerprints(self) -> np.ndarray:
        return self._column(1)

    @property
    def flags(self) -> np.ndarray:
        return self._column(2)

    @property
    def emails(self) -> EmailStore:
        return self._emails

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The table's blocks as they stand, confirmations not folded in yet aside (read them, do not change them)."""
        return self._table[0]

    @property
    def block_count(self) -> int:
        return len(self._table[0])

    def __len__(self) -> int:
        return sum(len(block[0]) for block in self._table[0])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confirmed fingerprint and flag for each key (0, 0 where unknown)."""
        blocks, firsts = self._table
        fps, flags = np.zeros(len(keys), np.uint64), np.zeros(len(keys), np.uint8)
        if not blocks:
            return fps, flags
        which = _block_of(firsts, keys)
        for b in np.unique(which).tolist():
            picked = np.flatnonzero(which == b)
            known, known_fps, known_flags, _ = blocks[b]
            pos = np.minimum(np.searchsorted(known, keys[picked]), len(known) - 1)
            found = known[pos] == keys[picked]
            fps[picked[found]], flags[picked[found]] = known_fps[pos[found]], known_flags[pos[found]]
        return fps, flags

    def record(self, rows: StateRows) -> None:
        """Contacts ActiveCampaign has confirmed; a later confirmation of a key replaces an earlier one.

        Folded into the table every ``COMPACT_EVERY`` contacts. Only the run records (on its own thread)."""
        if not len(rows):
            return
        self._recent.append(rows)
        self._recent_count += len(rows)
        if self._recent_count >= self.COMPACT_EVERY:
            self.fold()

    def fold(self) -> SyncState:
        """Apply every confirmation recorded so far; returns self."""
        if self._recent:
            taken, self._recent, self._recent_count = self._recent, [], 0
            self._merge(StateRows.concat(taken).latest_per_key())
        return self

    def _merge(self, update: StateRows) -> None:
        blocks = list(self._table[0])
        if not blocks:
            first_ref = self._emails.append(update.emails)
            refs = np.arange(first_ref, first_ref + len(update), dtype=np.uint32)
            self._set_blocks(_split(update.keys, update.fingerprints, update.flags, refs, self.BLOCK))
            return
        which = _block_of(self._table[1], update.keys)  # sorted, as the update's keys are
        bounds = np.searchsorted(which, np.arange(len(blocks) + 1))
        touched = np.flatnonzero(np.diff(bounds)).tolist()
        pos, found = np.empty(len(update), np.int64), np.empty(len(update), bool)
        for b in touched:
            lo, hi, known = bounds[b], bounds[b + 1], blocks[b][0]
            pos[lo:hi] = np.searchsorted(known, update.keys[lo:hi])
            found[lo:hi] = known[np.minimum(pos[lo:hi], len(known) - 1)] == update.keys[lo:hi]
        new = np.flatnonzero(~found)
        first_ref = self._emails.append(update.emails.take(new))
        refs = np.zeros(len(update), np.uint32)
        refs[new] = np.arange(first_ref, first_ref + len(new), dtype=np.uint32)
        for b in reversed(touched):  # from the last, so a block split in two does not move those still to do
            part = slice(bounds[b], bounds[b + 1])
            keys, fps, flags, block_refs = blocks[b]
            hit, at = found[part], pos[part]
            fps[at[hit]], flags[at[hit]] = update.fingerprints[part][hit], update.flags[part][hit]
            if hit.all():
                continue
            gain, at = ~hit, at[~hit]
            merged = (np.insert(keys, at, update.keys[part][gain]), np.insert(fps, at, update.fingerprints[part][gain]),
                      np.insert(flags, at, update.flags[part][gain]), np.insert(block_refs, at, refs[part][gain]))
            blocks[b:b + 1] = _split(*merged, self.BLOCK)
            self._set_blocks(blocks)  # per block, so each replaced block is freed before the next is copied

    @property
    def pending_updates(self) -> int:
        return self._recent_count

    def subscribed_missing_from(self, seen: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Contacts this export subscribed that are not in ``seen`` (sorted keys): candidates for removal."""
        keys, refs = [], []
        for block_keys, _, flags, block_refs in self.fold()._table[0]:
            idx = np.flatnonzero((flags == ListStatus.SUBSCRIBED) & ~np.isin(block_keys, seen))
            keys.append(block_keys[idx])
            refs.append(block_refs[idx])
        if not keys:
            return np.empty(0, np.uint64), []
        return np.concatenate(keys), self._emails.get(np.concatenate(refs))

    def subscribed_count(self) -> int:
        return sum(int(np.count_nonzero(block[2] == ListStatus.SUBSCRIBED)) for block in self._table[0])

    @property
    def nbytes(self) -> int:
        """Memory the state's arrays and emails hold (what grows with the number of contacts)."""
        recent = sum(r.keys.nbytes + r.fingerprints.nbytes + r.flags.nbytes + len(r.emails.data) for r in self._recent)
        table = sum(a.nbytes for block in self._table[0] for a in block)
        return table + self._emails.nbytes + recent

    def rows(self) -> StateRows:
        """Everything, sorted by key, emails aligned (for tests and tools: it copies every email)."""
        self.fold()
        return StateRows(self.keys, self.fingerprints, self.flags, PackedEmails.of(self._emails.get(self._column(3))))


def _block_of(firsts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The block each key falls in (keys below the first block's go to it)."""
    return np.maximum(np.searchsorted(firsts, keys, side="right") - 1, 0)


def _split(keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray, size: int) -> list[Block]:
    """Key-sorted columns as blocks of ~``size`` (views); one block while it is under twice that."""
    if not len(keys):
        return []
    pieces = 1 if len(keys) <= 2 * size else -(-len(keys) // size)
    return list(zip(*(np.array_split(column, pieces) for column in (keys, fps, flags, refs))))


def _writable(keys: np.ndarray, fps: np.ndarray, flags: np.ndarray, refs: np.ndarray) -> list[np.ndarray]:
    return [np.require(column, dtype, ["C", "W"]) for column, dtype in zip((keys, fps, flags, refs), _BLOCK_TYPES)]
