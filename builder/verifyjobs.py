"""The verifications of one `build`: recorded ones looked up in the cache, the others run here (with
a progress bar per loop block) or in `jobs` worker processes, and handed back in kernel order.

Only the build process reads and records the cache; workers only verify. A worker loads the library
from the same file the build read and emits the same code (emission is deterministic).
"""
from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

from . import vcache
from .progress import Progress

if TYPE_CHECKING:
    from .verify import Report


@dataclass
class Outcome:
    kernel: str
    backend: str
    report: Optional["Report"] = None  # run by this build
    entry: Optional[dict] = None       # what an earlier build recorded

    @property
    def cached(self) -> bool:
        return self.entry is not None

    @property
    def ok(self) -> bool:
        return self.entry is not None or (self.report is not None and self.report.ok)

    def as_json(self) -> dict:
        if self.entry is not None:
            return {**self.entry["report"], "cached": True, "recorded": self.entry["recorded"]}
        assert self.report is not None
        return {**self.report.as_json(), "cached": False}

    def lines(self, file: str) -> list[str]:
        if self.entry is not None:
            seconds = self.entry["report"].get("seconds", 0.0)
            return [f"  {self.backend}: verified (cached): ok when recorded {self.entry['recorded']} "
                    f"(that run took {seconds:.1f} s)"]
        from .verify import describe

        assert self.report is not None
        return describe(self.report, file)


def run(kernels, backends, sizes: Optional[str], seed: int, check_values: bool, *, file: str, max_bytes: int,
        jobs: int, cache: Optional[vcache.Cache], progress: Progress) -> Iterator[Outcome]:
    """One Outcome per (kernel, backend), in that order, each as soon as it and those before it are known."""
    tasks = [(k, b) for k in kernels for b in backends]
    keys, found = {}, {}
    if cache is not None:
        for k, b in tasks:
            keys[k.name, b] = vcache.key(k, b, k.size_set(sizes), seed, check_values)
            entry = cache.get(keys[k.name, b])
            if entry is not None:
                found[k.name, b] = entry
    todo = [(k, b) for k, b in tasks if (k.name, b) not in found]
    if jobs > 1 and len(todo) > 1:
        fresh = _in_workers(todo, sizes, seed, check_values, file, max_bytes, jobs, progress)
    else:
        fresh = _here(todo, sizes, seed, check_values, progress)
    for k, b in tasks:
        if (k.name, b) in found:
            yield Outcome(k.name, b, entry=found[k.name, b])
            continue
        report = next(fresh)
        if cache is not None and report.ok:  # a failure is never recorded: it always runs again
            cache.put(keys[k.name, b], report.as_json())
        yield Outcome(k.name, b, report=report)


def _here(todo, sizes, seed, check_values, progress: Progress):
    fixtures: dict = {}  # a kernel's inputs and golden, made once for all its backends
    for k, b in todo:
        progress.start(k.name, b, len(k.typed(sizes)[1].blocks))
        try:
            report = k.verify(b, sizes, seed, lambda what, k=k, b=b: progress.step(k.name, b, what), check_values,
                              on_block=lambda i, name, k=k, b=b: progress.step(k.name, b, f"block {i} {name}",
                                                                               completed=i), fixtures=fixtures)
        finally:
            progress.done(k.name, b)
        yield report


_LIBRARY: Any = None  # a worker's copy of the library


def _load(file: str, max_bytes: int) -> None:
    global _LIBRARY
    from . import load

    _LIBRARY = load(file, max_bytes=max_bytes)


def _verify(kernel: str, backend: str, sizes, seed: int, check_values: bool):
    return _LIBRARY[kernel].verify(backend, sizes, seed, check_values=check_values)


def _in_workers(todo, sizes, seed, check_values, file, max_bytes, jobs, progress: Progress):
    """Verify on `jobs` spawned processes (a fresh interpreter each: no state forked from this one)."""
    workers = min(jobs, len(todo))
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_load,
                               initargs=(file, max_bytes))
    label = ("verifying", f"on {workers} processes")
    progress.start(*label, len(todo), unit="verifications")
    finished = []

    def tick(future, name) -> None:
        finished.append(name)
        progress.step(*label, f"done: {name}", completed=len(finished))

    try:
        futures = []
        for k, b in todo:
            future = pool.submit(_verify, k.name, b, sizes, seed, check_values)
            future.add_done_callback(functools.partial(tick, name=f"{k.name} {b}"))
            futures.append(future)
        for future in futures:
            yield future.result()
    finally:
        progress.done(*label)
        pool.shutdown(wait=True, cancel_futures=True)
