"""Process memory: the peak to report, glibc settings that keep a long run's memory flat, and the cyclic GC.

``tune_process()`` applies the settings; the process's entry points call it once, before any thread allocates.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform
import threading

log = logging.getLogger(__name__)

# mallopt() parameters from glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_BYTES = 256 * 1024
_ARENA_MAX = 2
_allocator_tuned = False
_process_tuned = False
_process_lock = threading.Lock()
# A run allocates a few container objects a row (row lists, contacts) that almost all die young and form no
# cycles. At Python's default of 700 the young generation fills over and over during a run, and each collection
# holds the interpreter lock that the sending threads need while finding nothing to free; at 50,000 collections
# are rare. Cycles are still collected, within at most ~50,000 allocations.
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


def tune_process() -> None:
    """Apply the allocator and GC settings below, once per process; later calls do nothing.

    Call it first thing in each entry point (the CLI's main, the function app's module), before the threads that
    allocate are started: glibc's arena cap only limits arenas created after it.
    """
    global _process_tuned
    with _process_lock:
        if _process_tuned:
            return
        _process_tuned = True
    tune_allocator()
    tune_gc()


def tune_allocator() -> bool:
    """Make glibc give freed memory back instead of keeping it for later (once per process; glibc only).

    The sync state is rebuilt in arrays of several MB on the sink's threads while rows stream through the main
    thread. By default glibc raises its mmap threshold after the first large free and gives each thread its own
    arena, so later arrays land in heaps where small objects allocated around them pin the memory after the
    arrays are freed: the process grows with the export instead of with what it holds. A fixed threshold (large
    blocks are mmapped and unmapped on free) and two arenas keep it near what is really held.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1 and libc.mallopt(_M_ARENA_MAX, _ARENA_MAX) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    if not ok:
        log.debug("mallopt refused the memory settings; memory may grow with the export")
    return ok


def tune_gc() -> None:
    """Collect cyclic garbage less often (process-wide; see GC_YOUNG_THRESHOLD). Never lowers a higher setting."""
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
