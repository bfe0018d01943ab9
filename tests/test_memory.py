"""Process memory helpers: the peak a report carries, and the glibc settings a run applies."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.memory import tune_allocator

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt and /proc are glibc/Linux features")


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
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    before, after = map(float, out.split())
    assert after >= before + 60


@glibc_only
def test_allocator_settings_are_accepted_and_applied_once():
    assert tune_allocator() is True
    assert tune_allocator() is True


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
    out = subprocess.run([sys.executable, "-c", GC_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.split() == ["True", "True"]
