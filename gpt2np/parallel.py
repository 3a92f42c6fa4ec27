"""Threads for long inputs: a long input's rows (and its attention heads) shared among the cores.

A decode step is a few GEMVs, which OpenBLAS spreads over the cores well.  A long prompt also
spends much of its time in attention's many small per-head products, which OpenBLAS splits over
its threads poorly, and in passes of softmax, GELU and norms, which NumPy runs on one core.  So
for a long input the model gives each of N threads a share of the rows (and of attention's heads)
and sets OpenBLAS to one thread meanwhile: NumPy releases the GIL inside matmul and ufunc loops,
so the threads run side by side.  (Python threads beside a multi-threaded OpenBLAS do not mix:
after each call OpenBLAS's idle threads spin for a while, taking the cores the Python threads
need.)  Every row and head goes through the same formulas as in one thread; only attention's
tile sizes, and so the rounding, may differ.

Only NumPy's OpenBLAS can be told its thread count (through ctypes, as threadpoolctl does); with
another BLAS, or OpenBLAS already at one thread (OPENBLAS_NUM_THREADS=1), nothing changes.
The measurements behind the threshold are in docs/speed.md.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

PARALLEL_MIN_ROWS = 512  # B·T below which threads cost more than they bring (docs/speed.md)


def threads_for(n_rows: int) -> int:
    """How many threads a forward pass over ``n_rows`` tokens should use: OpenBLAS's thread
    count for a long input (``n_rows >= PARALLEL_MIN_ROWS``), else 1."""
    blas = _openblas()
    if blas is None or n_rows < PARALLEL_MIN_ROWS:
        return 1
    return blas.threads()


class threads:
    """``with threads(n):`` OpenBLAS runs on one thread while ``n`` > 1 Python threads share the
    work (restored on exit; nested and concurrent uses restore it once).  No-op for n <= 1.

    OpenBLAS's thread count belongs to the whole process: a product that another thread of the
    program computes meanwhile also runs on one thread."""

    _lock = threading.Lock()
    _users = 0  # callers inside; the first saves OpenBLAS's count, the last restores it
    _saved = 1

    def __init__(self, n: int):
        self.blas = _openblas() if n > 1 else None

    def __enter__(self):
        if self.blas is not None:
            with threads._lock:
                if threads._users == 0:
                    threads._saved = self.blas.get()
                    self.blas.set(1)
                threads._users += 1
        return self

    def __exit__(self, *exc):
        if self.blas is not None:
            with threads._lock:
                threads._users -= 1
                if threads._users == 0:
                    self.blas.set(threads._saved)


def in_parts(n: int, run, workers: int = 1) -> None:
    """``run(part)`` for ``workers`` consecutive slices covering ``range(n)``, each in a thread
    of its own (the caller runs the first); ``run(slice(0, n))`` when ``workers`` is 1.  An
    exception in any part is raised here once every part has ended."""
    workers = max(1, min(workers, n))
    if workers == 1:
        run(slice(0, n))
        return
    bounds = [n * i // workers for i in range(workers + 1)]
    parts = [slice(bounds[i], bounds[i + 1]) for i in range(workers)]
    errors = []

    def job(part):
        try:
            run(part)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    helpers = [threading.Thread(target=job, args=(part,), daemon=True) for part in parts[1:]]
    for t in helpers:
        t.start()
    job(parts[0])
    for t in helpers:
        t.join()
    if errors:
        raise errors[0]


class _OpenBLAS:
    """Reads and sets the thread count of the OpenBLAS library NumPy runs on."""

    def __init__(self, get, set_):
        self._get, self._set = get, set_

    def get(self) -> int:
        return int(self._get())

    def set(self, n: int) -> None:
        self._set(int(n))

    def threads(self) -> int:
        """OpenBLAS's thread count outside any ``with threads(...)`` block."""
        with threads._lock:
            return threads._saved if threads._users else self.get()


@functools.lru_cache(maxsize=1)
def _openblas() -> "_OpenBLAS | None":
    """NumPy's OpenBLAS (found among the libraries this process has loaded, Linux only), or
    None if there is none whose thread count can be read and set."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            fields = (line.split(None, 5) for line in f)  # address perms offset dev inode [path]
            paths = {parts[5].strip() for parts in fields if len(parts) == 6}
    except OSError:
        return None
    candidates = [p for p in paths if "openblas" in os.path.basename(p).lower() and os.path.isfile(p)]
    candidates.sort(key=lambda p: "numpy" not in p)  # NumPy's own copy first
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    return _OpenBLAS(get, set_)
    return None
