"""Execute an emitted module's text (never a stale file on disk), so checks cover the printer too.

Triton: the module is imported from memory and its `run()` launches the loop blocks (on the CPU
through Triton's interpreter when no GPU is present). PyPTO: the program runs on `builder.plsim`,
the torch-backed executor of the `pl` subset the backend emits.
"""
from __future__ import annotations

import hashlib
import linecache
import os
import types
from typing import Callable, Mapping, Optional

from .dtypes import torch_dtype


def _filename(source: str, backend: str, kernel: str) -> str:
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<generated {kernel} {backend} {digest}>"
    # linecache lets Triton's JIT (and tracebacks) read the source of functions defined in it
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return filename


def load_module(source: str, backend: str, kernel: str) -> types.ModuleType:
    filename = _filename(source, backend, kernel)
    module = types.ModuleType(f"generated_{kernel}_{backend}")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


class _Announced:
    """A block kernel as the launcher sees it: `kernel[grid](...)` first tells `on_block`, then launches."""

    def __init__(self, kernel, name: str, on_block: Callable[[str], None]):
        self.kernel, self.name, self.on_block = kernel, name, on_block

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.on_block(self.name)
            return launch(*args, **kwargs)

        return run


def _announce_launches(module: types.ModuleType, on_block: Callable[[str], None]) -> None:
    """Wrap the kernels the launcher `run` launches (the names it reads that are Triton kernels; the
    helpers the kernels call stay as they are), in this module's namespace only."""
    from triton.runtime.jit import KernelInterface

    for name in module.run.__code__.co_names:
        kernel = module.__dict__.get(name)
        if isinstance(kernel, KernelInterface):
            module.__dict__[name] = _Announced(kernel, name, on_block)


def prepare_triton() -> None:
    """Triton runs on the CPU through its interpreter when no GPU is present (must precede the import)."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if os.environ.get("TRITON_INTERPRET") == "1":
        from . import triton_interpreter

        triton_interpreter.install()


def run_emitted(source: str, backend: str, tg, inputs: Mapping,
                on_block: Optional[Callable[[str], None]] = None) -> dict:
    """Run generated code; returns kernel outputs by name and every stage output by `stage.port`.
    `on_block(name)` is told as each block kernel launches (Triton: its function's name) or each
    `pl.at` scope starts (PyPTO: its name_hint), for progress; the code itself is unchanged."""
    if backend == "triton":
        prepare_triton()
        module = load_module(source, backend, tg.spec.name)
        if on_block is not None:
            _announce_launches(module, on_block)
        return module.run(**inputs)
    from . import plsim
    from .emit.pypto import buffer_names

    outputs = {name: ([d.value for d in tg.types[ref].shape], torch_dtype(tg.types[ref].dtype))
               for name, ref in tg.outputs.items()}
    found = plsim.run(source, _filename(source, backend, tg.spec.name), tg.spec.name, dict(inputs), outputs,
                      on_scope=on_block)
    result = {name: found[name] for name in tg.outputs}
    local = {**buffer_names(tg), **{ref: name for name, ref in tg.outputs.items()}}
    for st in tg.stages.values():
        for port, t in st.out_types.items():
            ref = st.ref(port)
            result[ref] = found[local[ref]].reshape(t.numel_shape)
    return result
