"""Keep freed memory in the features job process for the next file's arrays.

A features job allocates and frees the same few dozen arrays (one per column, tens of MB
each on a 1m file) once per candle file. With the default settings every one of them is
fresh memory: glibc hands arrays above its mmap threshold straight back to the kernel on
free, and pyarrow's own allocator (mimalloc) returns its pages too, so each new array is
faulted in again page by page. On the virtual machines we measured a page fault costs tens
of microseconds: on a 6-year 1m symbol this was 2.5 s of system time for 3.4 s of
computation (docs/benchmarks.md, ``features``).

``keep_freed_memory`` makes the process reuse what it freed instead: pyarrow allocates from
the system allocator (glibc malloc, shared with numpy), arrays up to 32 MB come from the heap
rather than from their own mapping, and the heap is not trimmed back to the kernel; numpy
stops asking for transparent huge pages (``_no_transparent_huge_pages_for_numpy``). The
cost is that the process keeps its high-water mark until it exits (the job's peak RSS does
not change: it is reached while all of a file's columns are alive). Called once where a features
job process starts (``scripts/features_shard.py``); never in a long-lived process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc <malloc.h> mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MB on 64-bit): arrays larger
# than that (over ~4.2 M rows) keep their own mapping and still fault in.
MMAP_THRESHOLD = 32 * 1024 * 1024
# mallopt takes an int: 2 GB, above the job's peak, i.e. the heap top is never given back.
TRIM_THRESHOLD = 2**31 - 1


def _no_transparent_huge_pages_for_numpy() -> None:
    """numpy asks the kernel for transparent huge pages for every array of 4 MB or more
    (``madvise(MADV_HUGEPAGE)``; the NUMPY_MADVISE_HUGEPAGE setting, read when numpy is
    imported). Where the kernel must first find or compact free 2 MB pages, faulting them in
    costs far more than 4 kB pages: on the benchmark's job the system time was 1.2–1.4 s with
    huge pages and 0.7–0.9 s without, in alternating runs (docs/benchmarks.md). numpy only
    exposes the switch as a private function, hence the guarded lookup."""
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        log.info("numpy without _set_madvise_hugepage: huge page advice left as it is")
        return
    switch(False)


def keep_freed_memory() -> bool:
    """Tune this process's allocators as described above; False when it is not glibc (the
    settings are then the platform's defaults, results are the same)."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    _no_transparent_huge_pages_for_numpy()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no glibc mallopt: default allocator settings")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return ok
