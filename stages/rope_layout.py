"""RoPE lane layouts: where frequency k's (real, imaginary) pair lives among a head's rotary lanes.

The one place that knows the difference between interleaved and split-half lanes; `rope_extract`
and `rope_interleave` take their tile-code lane arithmetic from here.
"""
from __future__ import annotations

from builder.spec import Layout


def lane_exprs(layout: Layout, k: str, half: str) -> tuple[str, str]:
    """Code for the lane offsets (within the rotary part) of pair k's real and imaginary lanes."""
    if layout is Layout.interleave:
        return f"2 * {k}", f"2 * {k} + 1"
    return k, f"{half} + {k}"
