"""How build time grows with the size of a spec: time per stage (chains) and per kernel (libraries).

    python bench/build_speed.py [--counts 100,1000,10000] [--repeat 3] [--shape chain,library]

A chain is one kernel of N rope_apply stages, each reading the previous one's outputs; a library is
N one-stage kernels sharing a size set. For each N it loads the YAML from a file (read, parse,
validate, type-check, schedule: `builder.load`) and emits the Triton code of every kernel, and
prints the best of `--repeat` runs per stage or kernel, with its ratio to the smallest N: a flat
column means linear cost. Validating, scheduling and emitting never import torch, so neither does
this script. A size whose `--repeat` runs take less than `--min-seconds` (1) in all runs again until
they do (at most 50 runs). These machines are noisy: read the ratios of one run, not seconds across runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import builder  # noqa: E402
from builder.library import gc_paused  # noqa: E402
from builder.yamlsource import parse  # noqa: E402

HEAD = """version: 1
sizes:
  small: &small {T: 2, H: 16, R: 64}
kernels:
"""
INPUTS = """    inputs:
      e: {shape: [T, H, R], dtype: bf16, layout: interleave, init: {uniform: {}}}
      c: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: cos}}}
"""


def _stage(sid: str, even: str, odd: str) -> str:
    return (f"      {sid}: {{op: rope_apply, in: {{even: {even}, odd: {odd}, cos: c, sin: c}}, "
            "params: {direction: inverse}}\n")


def chain(n: int) -> str:
    """One kernel of `n` rope_apply stages, each rotating the previous one's pairs."""
    parts = [HEAD, "  k:\n    doc: a chain of rope_apply stages\n    sizes: {small: small}\n", INPUTS,
             "    stages:\n"]
    even, odd = "e", "e"
    for i in range(n):
        parts.append(_stage(f"s{i}", even, odd))
        even, odd = f"s{i}.even", f"s{i}.odd"
    parts.append(f"    outputs:\n      o_even: {{from: {even}}}\n      o_odd: {{from: {odd}}}\n")
    return "".join(parts)


def library(n: int) -> str:
    """`n` kernels of one rope_apply stage each, sharing the size set `small`."""
    parts = [HEAD]
    for i in range(n):
        parts += [f"  k{i}:\n    doc: kernel {i}\n    sizes: {{small: small}}\n", INPUTS, "    stages:\n",
                  _stage("rot", "e", "e"), "    outputs:\n      o_even: {from: rot.even}\n"
                  "      o_odd: {from: rot.odd}\n"]
    return "".join(parts)


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure(text: str, path: str, backend: str) -> dict:
    """Seconds (wall and CPU) of each step on one file."""
    Path(path).write_text(text)
    with gc_paused():  # as `builder.load` parses
        p_wall, p_cpu, _ = _timed(lambda: parse(text, path))
    l_wall, l_cpu, lib = _timed(lambda: builder.load(path))
    e_wall, e_cpu, _ = _timed(lambda: [lib[k].emit(backend) for k in lib])
    return {"parse": (p_wall, p_cpu), "load": (l_wall, l_cpu), "emit": (e_wall, e_cpu),
            "total": (l_wall + e_wall, l_cpu + e_cpu)}


MAX_RUNS = 50


def run(shape: str, counts: list[int], repeat: int, backend: str, min_seconds: float = 1.0) -> list[dict]:
    """Rows of best times; a size runs `repeat` times, and again until its runs took `min_seconds` (small
    sizes: a burst of noise on this machine is then one run of many)."""
    make = chain if shape == "chain" else library
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            text = make(n)
            runs: list[dict] = []
            while len(runs) < repeat or (sum(r["total"][0] for r in runs) < min_seconds and len(runs) < MAX_RUNS):
                runs.append(measure(text, os.path.join(tmp, f"{shape}{n}.yaml"), backend))
            best = {step: tuple(min(r[step][i] for r in runs) for i in range(2)) for step in runs[0]}
            rows.append({"shape": shape, "n": n, "bytes": len(text), **{f"{s}_s": best[s] for s in best}})
    return rows


def table(rows: list[dict]) -> str:
    unit = "stage" if rows[0]["shape"] == "chain" else "kernel"
    base = rows[0]
    lines = [f"{rows[0]['shape']}: microseconds per {unit}, best of the repeats (wall clock; CPU time of this "
             f"process in brackets); growth = total per {unit} / the same at N={base['n']}",
             f"{'N':>7} {'parse':>13} {'load':>13} {'emit':>13} {'total':>13} {'growth':>7} {'total s':>8}"]
    for r in rows:
        cells = [f"{r[s + '_s'][0] / r['n'] * 1e6:6.0f} ({r[s + '_s'][1] / r['n'] * 1e6:4.0f})"
                 for s in ("parse", "load", "emit", "total")]
        growth = (r["total_s"][0] / r["n"]) / (base["total_s"][0] / base["n"])
        lines.append(f"{r['n']:>7} " + " ".join(cells) + f" {growth:6.2f}x {r['total_s'][0]:8.2f}")
    lines.append("(load includes parse: read, parse, validate, type-check and schedule; total = load + emit)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="100,300,1000,3000,10000", help="stages per chain / kernels per library")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=1.0, help="run a size again until its runs took this long")
    p.add_argument("--shape", default="chain,library")
    p.add_argument("--backend", default="triton", choices=("triton", "pypto"))
    p.add_argument("--json", action="store_true", help="rows as JSON instead of tables")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    results = []
    for shape in args.shape.split(","):
        rows = run(shape, counts, args.repeat, args.backend, args.min_seconds)
        results += rows
        if not args.json:
            print(table(rows), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    assert "torch" not in sys.modules, "validating, scheduling and emitting must not import torch"


if __name__ == "__main__":
    main()
