"""On the CPU, keep freed memory in the process for the next step instead of handing it back to the system.

A diffusion step frees and re-allocates the same large activations every time (64 MB each in the VAE's
last blocks at 512x512). glibc's malloc gives blocks above its mmap threshold (at most 32 MB) straight
back to the kernel, and a thread's arena releases a heap as soon as it is empty; the next allocation of
the same size then faults every page in afresh, and the kernel zeroes each one. Measured on this project's
2-core AMX Xeon (full-size SD1.5, bf16, 512x512, generation on a worker thread as in the app): a VAE decode
took ~800,000 page faults and 2 s of kernel time, a UNet step ~130,000; with the settings below both fall
to zero after the first image. A whole image took 0.80x and 0.96x the time in two runs of
`python bench/memory_reuse.py` (the engine with and without, alternated): what the faults cost depends on
the state glibc's adaptive thresholds reach. The same kernels run on the same bits: images are unchanged.

The settings are process-wide glibc knobs (`mallopt`): one arena for all threads (a thread's arena can hold
no block above 64 MB and drops empty heaps), no mmap-backed blocks, and no automatic trimming. What is
kept is the peak the process already reached; `release_freed_memory` gives it back when a model is unloaded
(the CPU's counterpart of `torch.cuda.empty_cache`). Elsewhere than glibc (macOS, Windows, musl) nothing
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
INT_MAX = 2**31 - 1


@functools.cache  # find_library runs `ldconfig -p`; the answer is the process's for its whole life
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether this process runs on glibc, whose malloc these settings are for."""
    return _glibc() is not None


def keep_freed_memory() -> str | None:
    """Set glibc malloc to keep and reuse freed blocks; returns what was done (for the start line), else None.

    Call it before the worker and torch's threads start (an arena is chosen when a thread first allocates);
    calling it again changes nothing.
    """
    libc = _glibc()
    if libc is None:
        return None
    done = [libc.mallopt(M_ARENA_MAX, 1), libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, INT_MAX)]
    if not all(done):
        log.warning("malloc settings not accepted (%s); freed memory goes back to the system", done)
        return None
    return "freed memory reused"


def release_freed_memory() -> None:
    """Hand the freed memory back to the system (after a model is unloaded); glibc only."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
