"""Execute an emitted module's text (never a stale file on disk), so checks cover the printer too."""
from __future__ import annotations

import hashlib
import linecache
import os
import types
from typing import Mapping


def load_module(source: str, backend: str, kernel: str) -> types.ModuleType:
    """Import generated source from memory; linecache lets Triton's JIT read the function source."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<generated {kernel} {backend} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"generated_{kernel}_{backend}_{digest}")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def prepare_backend(backend: str) -> None:
    """Triton runs on the CPU through its interpreter when no GPU is present (must precede the import)."""
    if backend == "triton":
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def run_emitted(source: str, backend: str, kernel: str, inputs: Mapping) -> dict:
    prepare_backend(backend)
    module = load_module(source, backend, kernel)
    return module.run(**inputs)
