"""A modelled time per block from what the compiler reported: a model, never a measurement.

Occupancy: programs one SM holds at once, limited by registers, shared memory, warps and the block
limit (the CUDA occupancy rules). Time of a block:

    launch + max(bytes / bandwidth_busy, flops / peak_busy)

where the rates are the datasheet's, scaled by ACHIEVABLE (bandwidth only), by the share of the GPU
the grid keeps busy (an SM running k of the P programs carries k/P of the work; with fewer programs
than SMs the idle SMs add nothing), and by a latency factor when fewer than LATENCY_WARPS warps per
SM are resident. Arithmetic runs at the tensor-core peak of its kind only when every dot of the block
uses tensor cores, else at the CUDA-core fp32 rate. Spilled registers are flagged by the check, not
modelled (their traffic depends on trip counts the compiler does not report).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..sol import Cost
from ..targets import Arch, Target
from .resources import Resources

ACHIEVABLE = 0.85     # of datasheet bandwidth, reached by long streaming kernels
LATENCY_WARPS = 8     # resident warps per SM below which DRAM latency shows (linear below)
LAUNCH_S = 2e-6       # per kernel launch, back to back on one stream
WARP = 32

ASSUMPTIONS = (f"model, not a measurement: {ACHIEVABLE:.0%} of datasheet bandwidth x share of SMs busy, "
               f"x resident warps / {LATENCY_WARPS} when fewer, {LAUNCH_S * 1e6:g} us per launch; "
               f"CUDA-core fp32 rate unless every dot uses tensor cores; spills not modelled")


@dataclass(frozen=True)
class Occupancy:
    programs_per_sm: int     # 0: the program cannot launch at all
    limit: str               # what bounds it: registers, shared memory, warps, blocks


def occupancy(res: Resources, arch: Arch) -> Occupancy:
    warps = max(1, res.warps)
    if res.shared > arch.smem_per_block:
        return Occupancy(0, "shared memory")
    limits = {"warps": arch.warps_per_sm // warps, "blocks": arch.blocks_per_sm}
    if res.registers:
        per_warp = -(-res.registers * WARP // arch.reg_alloc_unit) * arch.reg_alloc_unit
        limits["registers"] = (arch.regs_per_sm // per_warp) // warps
    if res.shared:
        limits["shared memory"] = arch.smem_per_sm // (res.shared + arch.smem_reserved)
    limit = min(limits, key=lambda k: (limits[k], k))
    return Occupancy(limits[limit], limit)


@dataclass(frozen=True)
class Prediction:
    time_s: Optional[float]      # None: the block did not compile
    occupancy: Occupancy
    busy_sms: int
    bound: str                   # memory | compute | launch
    fits: bool = True            # False: it cannot launch as compiled; modelled as if one program per SM fit


def predict(cost: Cost, programs: int, res: Resources, target: Target) -> Prediction:
    dev, occ = target.device, occupancy(res, target.arch)
    busy = min(programs, target.sms)
    if res.error is not None:
        return Prediction(None, occ, busy, "does not compile", fits=False)
    per_sm = -(-programs // target.sms)           # programs the busiest SM runs
    share = per_sm * target.sms / programs        # its work relative to an even spread over every SM
    resident_warps = res.warps * min(max(1, occ.programs_per_sm), per_sm)
    hidden = min(1.0, resident_warps / LATENCY_WARPS)
    memory = cost.bytes / (target.bandwidth * ACHIEVABLE) * share / hidden
    tensor = res.dots > 0 and res.tensor_core_dots == res.dots
    compute = sum(f / dev.peaks[kind if tensor else "fp32"] for kind, f in cost.flops.items()) * share
    bound = "memory" if memory >= compute else "compute"
    if LAUNCH_S > max(memory, compute):
        bound = "launch"
    return Prediction(LAUNCH_S + max(memory, compute), occ, busy, bound, fits=occ.programs_per_sm > 0)
