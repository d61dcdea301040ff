"""RoPE lane layouts: where frequency k's (real, imaginary) pair lives among a head's rotary lanes.

The one place that knows the difference between interleaved and split-half lanes; `rope_extract`
and `rope_interleave` (golden and every backend) take their lane arithmetic from here.
"""
from __future__ import annotations

from builder.spec import Layout


def lane_exprs(layout: Layout, k: str, half: str) -> tuple[str, str]:
    """Code for the lane offsets (within the rotary part) of pair k's real and imaginary lanes."""
    if layout is Layout.interleave:
        return f"2 * {k}", f"2 * {k} + 1"
    return k, f"{half} + {k}"


def split(x, layout: Layout):
    """Torch: rotary lanes [..., R] -> (real [..., R/2], imaginary [..., R/2])."""
    if layout is Layout.interleave:
        pairs = x.unflatten(-1, (-1, 2))
        return pairs[..., 0], pairs[..., 1]
    return x.chunk(2, dim=-1)


def merge(real, imag, layout: Layout):
    """Torch: inverse of `split`."""
    import torch

    if layout is Layout.interleave:
        return torch.stack([real, imag], dim=-1).flatten(-2)
    return torch.cat([real, imag], dim=-1)
