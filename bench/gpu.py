"""Time the emitted Triton kernels on a CUDA GPU: each loop block and the whole kernel, against the
speed-of-light floor, the torch eager golden and torch.compile of that golden.

    python bench/gpu.py [--kernel NAME ...] [--sizes full] [--file kernels.yaml]

Blocks and the whole launcher run under CUDA graphs (triton.testing.do_bench_cudagraph), the goldens
under triton.testing.do_bench; every figure printed is a median measured in this run. Without a CUDA
device it says so and exits 0: it never prints a GPU time it did not measure (`build --target`
gives a modelled time on any machine, and says that it is a model).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import builder  # noqa: E402
from builder.emit.triton import emit_with_interfaces  # noqa: E402
from builder.sol import block_cost, kernel_cost  # noqa: E402
from builder.targets import DEVICES  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default="kernels.yaml", help="kernel library (default: ./kernels.yaml)")
    p.add_argument("--kernel", action="append", metavar="NAME", help="only this kernel (repeatable; default: all)")
    p.add_argument("--sizes", default="full", help="size set to time (default: full)")
    return p


def device_profile(name: str):
    """The profile of builder/targets.py whose key appears in the CUDA device name, or None."""
    return next((dev for key, dev in DEVICES.items() if key.lower() in name.lower()), None)


def block_launches(module, tg, sched, values: dict) -> list:
    """(block, launch()) per loop block, on the buffers a full run left in `values` (ref -> tensor),
    with the launcher's grid: one program per point of the block's domain."""
    out = []
    for b, face in zip(sched.blocks, emit_with_interfaces(tg, sched)[1]):
        fn, grid = getattr(module, face.name), tuple(a.trips for a in b.domain)
        args = [values[ref] for _, ref in face.args]
        out.append((b, lambda fn=fn, grid=grid, args=args: fn[grid](*args)))
    return out


def _us(ms: float) -> str:
    return f"{ms * 1e3:9.2f}"


def _floor(cost, dev) -> str:
    s = cost.floor_s(dev) if dev else None
    return "        -" if s is None else f"{s * 1e6:9.2f}"


def bench_kernel(k, sizes: str, dev) -> list[str]:
    import torch
    from triton.testing import do_bench, do_bench_cudagraph

    from builder.golden import run_golden
    from builder.runtime import load_module

    tg, sched = k.typed(sizes)
    inputs = {name: t.cuda() for name, t in k.make_inputs(sizes=sizes).items()}
    module = load_module(k.emit("triton", sizes), "triton", k.name)
    values = {**inputs, **module.run(**inputs)}   # compiles every block once, outside the timings
    torch.cuda.synchronize()
    lines = [f"{k.name}, sizes {sizes} ({tg.dims.size_set}):",
             "  block                          measured us   floor us  measured/floor"]
    total = 0.0
    for b, launch in block_launches(module, tg, sched, values):
        ms = do_bench_cudagraph(launch)
        total += ms
        floor = block_cost(b).floor_s(dev) if dev else None
        ratio = f"{ms * 1e-3 / floor:14.1f}" if floor else "             -"
        lines.append(f"  {b.index} {b.name:<28} {_us(ms)}  {_floor(block_cost(b), dev)}  {ratio}")
    whole = do_bench_cudagraph(lambda: module.run(**inputs))
    eager = do_bench(lambda: run_golden(tg, inputs))
    compiled = torch.compile(lambda ins: run_golden(tg, ins))
    compiled(inputs)  # compile outside the timing
    compiled_ms = do_bench(lambda: compiled(inputs))
    floor = kernel_cost(tg).floor_s(dev) if dev else None
    blocks_floor = sum(block_cost(b).floor_s(dev) for b in sched.blocks) if dev else None
    lines += [
        f"  all blocks, one graph          {_us(whole)}  (sum of blocks {total * 1e3:.2f} us)",
        f"  torch eager golden             {_us(eager)}",
        f"  torch.compile golden           {_us(compiled_ms)}",
        f"  floor: schedule {blocks_floor * 1e6:.2f} us, fused {floor * 1e6:.2f} us" if dev else
        "  floor: no profile for this device in builder/targets.py",
        f"  ratios: triton/floor {whole * 1e-3 / blocks_floor:.1f}x, eager/triton {eager / whole:.2f}x, "
        f"compiled/triton {compiled_ms / whole:.2f}x" if dev else
        f"  ratios: eager/triton {eager / whole:.2f}x, compiled/triton {compiled_ms / whole:.2f}x",
    ]
    return lines


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False), so nothing was timed "
              "and no GPU figure is reported. `build --target cuda:sm_90` compiles the kernels for a GPU on "
              "this machine and prints a modelled time (a model, not a measurement).")
        return 0
    lib = builder.load(args.file)
    names = args.kernel or list(lib)
    name = torch.cuda.get_device_name()
    dev = device_profile(name)
    print(f"device: {name} (floors from the {dev.name} profile)" if dev else f"device: {name} (no floor profile)")
    for n in names:
        print("\n".join(bench_kernel(lib[n], args.sizes, dev)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
