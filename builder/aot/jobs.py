"""What to compile, once: one self-contained source per block kernel, compiled in worker processes.

A block's source is cut from the emitted module (its kernel, the helpers and constants it reads, the
imports they need), so blocks that are the same code in several kernels (the compress-ratio variants)
share one compile. Each worker thread feeds one worker process (worker.py says why a process).
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .resources import Resources


@dataclass(frozen=True)
class Job:
    fn_name: str
    source: str
    signature: tuple[tuple[str, str], ...]   # (argument, Triton type), in argument order
    cc: int
    weight: float = 0.0                      # bigger first, so the slowest compiles start early

    @property
    def key(self) -> str:
        text = "\0".join([self.fn_name, self.source, repr(self.signature), str(self.cc)])
        return hashlib.sha256(text.encode()).hexdigest()


def block_source(module: str, fn_name: str) -> str:
    """Module text holding function `fn_name` and every top-level import, constant and function it
    reads, transitively, in their original order and spelling."""
    tree = ast.parse(module)
    defines: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        for name in _defined(stmt):
            defines[name] = stmt
    if fn_name not in defines:
        raise KeyError(f"no top-level function {fn_name} in the module")
    needed: set[int] = set()
    todo = [fn_name]
    while todo:
        found = defines.get(todo.pop())
        if found is None or id(found) in needed:
            continue
        needed.add(id(found))
        todo += [n.id for n in ast.walk(found) if isinstance(n, ast.Name)]
    lines = module.splitlines()
    parts = []
    for stmt in tree.body:
        if id(stmt) in needed:
            first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
            parts.append("\n".join(lines[first - 1:stmt.end_lineno]))
    return "\n\n".join(parts) + "\n"


def _defined(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    return []


def run_jobs(jobs: Iterable[Job], workers: int, progress: Optional[Callable[[str], None]] = None
             ) -> dict[str, Resources]:
    """Compile every distinct job on `workers` worker processes; results keyed by `Job.key`."""
    unique: dict[str, Job] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    todo: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for job in sorted(unique.values(), key=lambda j: -j.weight):
        todo.put(job)
    results: dict[str, Resources] = {}
    lock = threading.Lock()

    def serve() -> None:
        with tempfile.TemporaryDirectory(prefix="kernel-builder-aot-") as cache, _start_worker(cache) as proc:
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    break
                res = _ask(proc, job)
                with lock:
                    results[job.key] = res
                    if progress:
                        progress(f"compiled {job.fn_name} for sm_{job.cc} ({len(results)}/{len(unique)})")

    threads = [threading.Thread(target=serve) for _ in range(max(1, min(workers, len(unique))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = set(unique) - set(results)
    if missing:
        raise RuntimeError(f"{len(missing)} block(s) were not compiled: a worker process failed (see its stderr)")
    return results


@contextlib.contextmanager
def _start_worker(cache: str):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = cache
    root = str(Path(__file__).resolve().parents[2])   # the worker imports this very `builder` package
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen([sys.executable, "-m", "builder.aot.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        proc.wait()


def _ask(proc: subprocess.Popen, job: Job) -> Resources:
    assert proc.stdin is not None and proc.stdout is not None  # _start_worker opens both as pipes
    proc.stdin.write(json.dumps({"source": job.source, "fn_name": job.fn_name, "signature": dict(job.signature),
                                 "cc": job.cc}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the compile worker exited while compiling {job.fn_name} for sm_{job.cc}")
    data = json.loads(line)
    return Resources(**{**data, "mma": tuple(data["mma"])})
