"""Process memory helpers: the peak a report carries, and the process settings tune_process() applies.

The settings are process-wide, so each check runs in a fresh interpreter: one where they are applied, and one
where they are not, to show the probe sees the difference they make.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt, malloc_stats and /proc are glibc/Linux features")


def run_probe(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, without inherited MALLOC_* or GLIBC_TUNABLES settings."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          cwd=REPO, env=env, timeout=60)


def probe(code: str, *args: str) -> str:
    return run_probe(code, *args).stdout


PEAK_PROBE = """
from exporter.memory import peak_memory_mb
before = peak_memory_mb()
block = bytearray(64 * 1024 * 1024)  # zero-filled: every page is touched
after = peak_memory_mb()
print(before, after)
"""


@glibc_only
def test_peak_memory_is_the_process_high_water_mark():
    # A fresh process, so the high-water mark is not already above what the probe allocates.
    before, after = map(float, probe(PEAK_PROBE).split())
    assert after >= before + 60


# Large blocks allocated on a worker thread (as the sink's threads rebuild the sync state), with small objects
# allocated between them that stay alive, then the blocks freed. The first large block, freed at once, is what
# makes glibc raise its mmap threshold by default: the later blocks then come from the thread's arena, where the
# small objects pin them.
RSS_PROBE = """
import json, sys, threading
from exporter.memory import tune_process
if sys.argv[1] == "tuned":
    tune_process()

def rss_mb():
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))

BLOCK, SMALL, COUNT = 1024 * 1024, 2000, 40  # sizes in variables: constant bytes expressions are folded
result = {}

def work():
    first = b"\\1" * (8 * BLOCK)
    del first
    blocks, small = [], []
    result["base"] = rss_mb()
    for _ in range(COUNT):
        blocks.append(b"\\1" * BLOCK)  # every page written, so resident
        small.append(b"\\2" * SMALL)
    result["peak"] = rss_mb()
    del blocks
    result["after"] = rss_mb()

thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps(result))
"""


@glibc_only
@pytest.mark.parametrize("mode", ["tuned", "default"])
def test_large_blocks_freed_on_a_thread_go_back_to_the_os_only_when_tuned(mode):
    result = json.loads(probe(RSS_PROBE, mode))
    grown = result["peak"] - result["base"]
    kept = result["after"] - result["base"]
    assert grown > 35, result  # the 40 MB of blocks were resident
    if mode == "tuned":
        assert kept < 0.1 * grown, result  # unmapped on free
    else:
        # The control: without the settings glibc keeps the freed blocks, so the probe can tell them apart.
        assert kept > 0.9 * grown, result


# Threads that are all alive at once, each allocating from malloc: by default glibc gives each its own arena
# (up to 8 per core); malloc_stats() prints one "Arena N:" section per arena to stderr.
ARENA_PROBE = """
import ctypes, sys, threading
from exporter.memory import tune_process
if sys.argv[1] == "tuned":
    tune_process()
THREADS, SIZE = 6, 5000
barrier = threading.Barrier(THREADS)
held = []

def work():
    held.append(b"\\3" * SIZE)  # malloc, not Python's small-object allocator
    barrier.wait()

threads = [threading.Thread(target=work) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stdout.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(mode: str) -> int:
    stderr = run_probe(ARENA_PROBE, mode).stderr
    return sum(line.startswith("Arena ") for line in stderr.splitlines())


@glibc_only
def test_threads_share_at_most_two_arenas_when_tuned():
    assert arenas("tuned") <= 2
    assert arenas("default") > 2  # the control: without the cap the same threads spread over more arenas


SETTINGS_PROBE = """
import gc, json
from exporter.memory import GC_YOUNG_THRESHOLD, tune_process
gc.set_threshold(700, 10, 10)
tune_process()
applied = gc.get_threshold()
gc.set_threshold(1000, 10, 10)  # the process changes it afterwards on purpose
tune_process()
print(json.dumps({"young": GC_YOUNG_THRESHOLD, "applied": applied, "again": gc.get_threshold()}))
"""


def test_tune_process_raises_the_gc_threshold_once_per_process():
    result = json.loads(probe(SETTINGS_PROBE))
    assert result["applied"] == [result["young"], 10, 10]
    assert result["again"] == [1000, 10, 10]  # the second call changed nothing


GC_PROBE = """
import gc
from exporter.memory import GC_YOUNG_THRESHOLD, tune_gc
gc.set_threshold(700, 10, 10)
tune_gc()
raised = gc.get_threshold()
gc.set_threshold(10 * GC_YOUNG_THRESHOLD, 5, 5)
tune_gc()
print(raised == (GC_YOUNG_THRESHOLD, 10, 10), gc.get_threshold() == (10 * GC_YOUNG_THRESHOLD, 5, 5))
"""


def test_gc_runs_less_often_but_a_higher_setting_is_kept():
    assert probe(GC_PROBE).split() == ["True", "True"]
