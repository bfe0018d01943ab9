"""Process memory: the peak to report, glibc settings that keep a long run's memory flat, and the cyclic GC."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform

log = logging.getLogger(__name__)

# mallopt() parameters from glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_BYTES = 256 * 1024
_ARENA_MAX = 2
_tuned = False
# A run allocates a few container objects a row (row lists, contacts) that almost all die young and form no
# cycles. At Python's default of 700 a 1M-row run made ~1,700 collections costing ~2 s of the interpreter lock
# (6% of the run); at 50,000 it makes a handful. Cycles are still collected, in at most ~50,000 objects' time.
GC_YOUNG_THRESHOLD = 50_000


def peak_memory_mb() -> float | None:
    """This process's peak resident memory (Linux), to size instances by; None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def tune_allocator() -> bool:
    """Make glibc give freed memory back instead of keeping it for later (once per process; glibc only).

    The sync state is rebuilt in arrays of several MB on the sink's threads while rows stream through the main
    thread. By default glibc raises its mmap threshold after the first large free and gives each thread its own
    arena, so those arrays land in heaps that small objects then pin: a 1M-row run's memory grew by ~450 bytes a
    row. A fixed threshold (large blocks are mmapped and unmapped on free) and two arenas keep it near what is
    really held (~70 bytes a row).
    """
    global _tuned
    if _tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1 and libc.mallopt(_M_ARENA_MAX, _ARENA_MAX) == 1
    except (OSError, AttributeError):
        return False
    _tuned = ok
    if not ok:
        log.debug("mallopt refused the memory settings; memory may grow with the export")
    return ok


def tune_gc() -> None:
    """Collect cyclic garbage less often (process-wide; see GC_YOUNG_THRESHOLD). Never lowers a higher setting."""
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
