"""RoPE lane layouts: where frequency k's (real, imaginary) pair lives among a head's rotary lanes.

The one place that knows the difference between interleaved and split-half lanes. Each part of a
layout is an affine map `lane = stride * k + shift + halves * (R / 2)`, used by the tile code of
`rope_extract` and `rope_interleave` in every backend.
"""
from __future__ import annotations

from typing import NamedTuple

from builder import dtypes
from builder.spec import DType, Layout


class Lanes(NamedTuple):
    stride: int
    shift: int = 0
    halves: int = 0


# layout -> (lanes of the real parts, lanes of the imaginary parts)
LANES = {
    Layout.interleave: (Lanes(2), Lanes(2, shift=1)),        # lanes 2k and 2k + 1
    Layout.split_half: (Lanes(1), Lanes(1, halves=1)),       # lanes k and R/2 + k
}


def lane_code(lanes: Lanes, k: str, half: str) -> str:
    terms = [k if lanes.stride == 1 else f"{lanes.stride} * {k}"]
    terms += [str(lanes.shift)] * bool(lanes.shift) + [half] * bool(lanes.halves)
    return " + ".join(terms)


def lane_exprs(layout: Layout, k: str, half: str) -> tuple[str, str]:
    """Code for the lane offsets (within the rotary part) of pair k's real and imaginary lanes."""
    real, imag = LANES[layout]
    return lane_code(real, k, half), lane_code(imag, k, half)


def is_contiguous(layout: Layout) -> bool:
    """True when each part is a contiguous run of lanes, so plain slices move it."""
    return all(lanes.stride == 1 for lanes in LANES[layout])


def offset_code(lanes: Lanes, half: str) -> str:
    """First lane of a contiguous part."""
    return " + ".join([str(lanes.shift)] * bool(lanes.shift) + [half] * bool(lanes.halves)) or "0"


def pl_float(code: str) -> str:
    """`pl` code of a float scalar from integer code (the `pl` parser accepts no `float(...)` call)."""
    if code.isdigit():
        return f"{float(code)}"
    return f"1.0 * {code}" if code.isidentifier() else f"1.0 * ({code})"


def pl_gather_lanes(lanes: Lanes, k: str, half: str) -> str:
    """`pl` code of an fp32 tile of lane indices of one part, from the tile `k` of pair indices."""
    code = f"pl.mul({k}, {float(lanes.stride)})" if lanes.stride != 1 else k
    offset = f"{lanes.shift} + {half}" if lanes.halves else str(lanes.shift)
    return f"pl.add({code}, {pl_float(offset)})" if lanes.shift or lanes.halves else code


def pl_source_lanes(layout: Layout, lane: str, half: str, pair: str, out: str) -> list[str]:
    """`pl` statements turning an fp32 tile `lane` of output lanes into `out`: for each lane, its
    position in `concat(real, imaginary)` (the inverse of LANES for the stride-2 layouts)."""
    real, imag = LANES[layout]
    assert real.stride == imag.stride == 2 and {real.shift, imag.shift} == {0, 1} and not real.halves + imag.halves
    imag_first = imag.shift == 0
    part = f"pl.sub({lane}, pl.mul({pair}, 2.0))"  # 0 for lane 2k, 1 for lane 2k + 1
    which = f"pl.sub(1.0, {part})" if imag_first else part
    return [
        f"{pair} = pl.cast(pl.cast(pl.mul({lane}, 0.5), target_type=pl.INT32, mode=\"floor\"), target_type=pl.FP32)",
        f"{out} = pl.add(pl.mul({which}, {pl_float(half)}), {pair})",
    ]


def pl_gather_source(code: str, dtype: DType) -> str:
    """`pl` code of a tile `pl.gather` can read: a bf16 (or int8) tile widened to fp32, losslessly."""
    return code if dtypes.info(dtype).pl_gather else f"pl.cast({code}, target_type=pl.FP32)"


def pl_gather_result(code: str, dtype: DType) -> str:
    """`pl` code of a gathered tile back in `dtype` (exact: the values came from `dtype`)."""
    if dtypes.info(dtype).pl_gather:
        return code
    return f"pl.cast({code}, target_type={dtypes.pl_code(dtype)}, mode=\"rint\")"
