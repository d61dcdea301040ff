"""Time `verify` of a kernel per backend, in one process, and report ratios measured in this run.

    python bench/verify_time.py [--kernel NAME] [--sizes full] [--repeat 3]

Prints, per backend, the best and median wall time of a whole verification (inputs, golden, emitted
code, comparisons) and its ratio to the golden alone. These machines are noisy: compare ratios from
one run, not seconds across runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import builder


def best_and_median(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default="kernels.yaml")
    p.add_argument("--kernel", default="dsv4_sparse_attn_decode")
    p.add_argument("--sizes", default="full")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    k = builder.load(args.file)[args.kernel]
    inputs = k.make_inputs(sizes=args.sizes)
    golden_best, golden_median = best_and_median(lambda: k.golden(inputs, sizes=args.sizes), args.repeat)
    print(f"{args.kernel}, sizes {args.sizes}: golden alone best {golden_best:.2f} s, median {golden_median:.2f} s")
    for backend in ("triton", "pypto"):
        reports = []
        best, median = best_and_median(lambda: reports.append(k.verify(backend, args.sizes)),  # noqa: B023 (called now)
                                       args.repeat)
        status = "ok" if all(r.ok for r in reports) else "FAILED"
        print(f"  verify {backend:6s} {status}: best {best:.2f} s, median {median:.2f} s, "
              f"{best / golden_best:.1f}x the golden")


if __name__ == "__main__":
    main()
