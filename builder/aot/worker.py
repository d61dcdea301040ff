"""A worker process: compile block kernels with Triton's own compiler and read their resources.

`python -m builder.aot.worker` reads one JSON job per line on stdin and answers one JSON `Resources`
per line on stdout. `jobs.run_jobs` starts it as a plain subprocess with an environment without
TRITON_INTERPRET (which the CPU interpreter sets process-wide and which turns every `@triton.jit`
into an interpreted function) and with a private, empty Triton cache, so that every compile runs
ptxas, whose log is where spill counts appear, and nothing lands in the user's ~/.triton.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict

from .resources import Resources


def compile_block(source: str, fn_name: str, signature: dict, cc: int) -> Resources:
    """Compile kernel `fn_name` of module text `source` for compute capability `cc`."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ..runtime import load_module

    knobs.nvidia.dump_ptxas_log = True  # ptxas -v output is printed: captured below
    fn = getattr(load_module(source, "triton", fn_name), fn_name)
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn=fn, signature=dict(signature), constexprs={}),
                                      target=GPUTarget("cuda", cc, 32))
    except Exception as exc:  # the compiler's own error is the finding
        return Resources(compile_s=time.perf_counter() - start, error=_summary(exc))
    elapsed = time.perf_counter() - start
    return read(compiled.asm, compiled.metadata, log.getvalue(), elapsed)


def read(asm: dict, metadata, ptxas_log: str, compile_s: float) -> Resources:
    """Resources of a CompiledKernel from its IR, PTX, metadata and ptxas -v log."""
    spills = PTXAS_SPILLS.search(ptxas_log)
    regs = PTXAS_REGS.search(ptxas_log)
    if spills is None or regs is None:
        raise RuntimeError(f"no ptxas -v resource lines in the log:\n{ptxas_log}")
    stack, stores, loads = (int(g) for g in spills.groups())
    dots = len(TTIR_DOT.findall(asm["ttir"]))
    fma_dots = sum(1 for enc in TTGIR_DOT_RESULT.findall(asm["ttgir"]) if not enc.startswith("mma"))
    return Resources(registers=int(regs.group(1)), spill_stores=stores, spill_loads=loads, stack=stack,
                     shared=int(metadata.shared), warps=int(metadata.num_warps), dots=dots,
                     tensor_core_dots=max(0, dots - fma_dots), mma=tuple(sorted(set(PTX_MMA.findall(asm["ptx"])))),
                     compile_s=round(compile_s, 3))


PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
PTXAS_REGS = re.compile(r"Used (\d+) registers")
TTIR_DOT = re.compile(r"\btt\.dot\s")
# A tt.dot left in TTGIR with a non-MMA result layout runs on CUDA cores (FMA); tensor-core dots are
# either tt.dot with an `#mma` result (sm_80) or rewritten to warp_group_dot / tc_gen5_mma (sm_90+).
TTGIR_DOT_RESULT = re.compile(r"= tt\.dot\s.*->\s*tensor<[^>#]*#(\w+)")
PTX_MMA = re.compile(r"\b(wgmma\.mma_async|mma\.sync|tcgen05\.mma)\b")


def _summary(exc: Exception) -> str:
    """One line: the compiler's first line that says `error`, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    line = next((x for x in lines if "error" in x.lower()), lines[0])
    return f"{type(exc).__name__}: {line}"[:300]


def main() -> None:
    """Serve jobs until stdin closes. Only result lines reach the real stdout: anything else printed
    (by the compiler or a library) goes to stderr."""
    if os.environ.get("TRITON_INTERPRET"):
        raise SystemExit("builder.aot.worker: TRITON_INTERPRET is set; it would interpret, not compile")
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        job = json.loads(line)
        res = compile_block(job["source"], job["fn_name"], job["signature"], job["cc"])
        results.write(json.dumps(asdict(res)) + "\n")
        results.flush()


if __name__ == "__main__":
    main()
