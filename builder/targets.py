"""The one table of device facts: memory bandwidth, peak rates, SM counts and per-SM limits.

`builder.sol` reads bandwidth and peaks for its floors; `build --target` reads the SM limits to judge
compiled kernels and to model their time. A new GPU generation is one `Arch` and one `Device` entry;
a new `--target` name is one line of `TARGETS`. Nothing here imports torch or triton.

Sources (NVIDIA):
- per-SM limits: CUDA C++ Programming Guide, "Features and Technical Specifications" (table of
  technical specifications per compute capability), and the Ampere/Hopper/Blackwell tuning guides,
  e.g. https://docs.nvidia.com/cuda/hopper-tuning-guide/ ("shared memory capacity per SM is 228 KB
  ... maximum shared memory per thread block 227 KB"; 1 KB per block is reserved for system use).
- SM counts, bandwidth and dense peaks: the product datasheets of A100 SXM 80GB, H100 SXM5, H200 SXM
  and HGX B200 (https://www.nvidia.com/en-us/data-center/{a100,h100,h200,hgx}/); dense = half the
  sparse tensor-core figure quoted there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

KB = 1024


@dataclass(frozen=True)
class Arch:
    """Limits of one streaming multiprocessor of a CUDA compute capability."""

    cc: int                      # compute capability as Triton's GPUTarget wants it: 80, 90, 100
    smem_per_block: int          # bytes a program may allocate (the opt-in maximum)
    smem_per_sm: int             # bytes of shared memory one SM holds
    smem_reserved: int = 1 * KB  # per resident block, taken by the system
    regs_per_sm: int = 64 * KB
    regs_per_thread: int = 255
    reg_alloc_unit: int = 256    # registers are allocated per warp in units of this many
    warps_per_sm: int = 64
    blocks_per_sm: int = 32


ARCHES = {
    80: Arch(80, smem_per_block=163 * KB, smem_per_sm=164 * KB),
    90: Arch(90, smem_per_block=227 * KB, smem_per_sm=228 * KB),
    100: Arch(100, smem_per_block=227 * KB, smem_per_sm=228 * KB),
}


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth: Optional[float]          # bytes / s
    peaks: dict                         # flops kind -> ops / s; `fp32` is the CUDA-core (non-tensor) rate
    note: str = ""
    arch: Optional[int] = None          # compute capability (key of ARCHES), None off CUDA
    sms: Optional[int] = None


DEVICES = {
    "A100": Device("A100 SXM 80GB", 2.039e12, {"bf16": 312e12, "int8": 624e12, "fp32": 19.5e12},
                   "dense tensor-core peaks", arch=80, sms=108),
    "H100": Device("H100 SXM", 3.35e12, {"bf16": 989e12, "int8": 1979e12, "fp32": 67e12}, "dense tensor-core peaks",
                   arch=90, sms=132),
    "H200": Device("H200 SXM", 4.8e12, {"bf16": 989e12, "int8": 1979e12, "fp32": 67e12}, "dense tensor-core peaks",
                   arch=90, sms=132),
    "B200": Device("HGX B200", 7.7e12, {"bf16": 2.25e15, "int8": 4.5e15, "fp32": 75e12}, "dense tensor-core peaks",
                   arch=100, sms=148),
    "Ascend910B": Device("Ascend 910B", None, {}, "to be measured"),
}

# A loop block moving FILL_BYTES or more should launch at least FILL_PROGRAMS programs: as many as
# the largest GPU here has SMs. Ops choose default tiles and splits to get there.
FILL_BYTES = 8_000_000
FILL_PROGRAMS = max(d.sms for d in DEVICES.values() if d.sms)

# `build --target NAME`: the device whose numbers judge and model code compiled for that architecture.
TARGETS = {"cuda:sm_80": "A100", "cuda:sm_90": "H100", "cuda:sm_100": "B200"}


@dataclass(frozen=True)
class Target:
    name: str                 # `cuda:sm_90`
    device_key: str           # key of DEVICES
    device: Device
    arch: Arch

    @property
    def sm(self) -> str:
        return f"sm_{self.arch.cc}"

    # A target's device is a CUDA GPU (checked by `target`): its SM count and bandwidth are known.
    @property
    def sms(self) -> int:
        return self.device.sms or 0

    @property
    def bandwidth(self) -> float:
        return self.device.bandwidth or 0.0


def target(name: str) -> Target:
    """The target named `name` (a key of TARGETS); KeyError names the known ones."""
    if name not in TARGETS:
        raise KeyError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
    key = TARGETS[name]
    dev = DEVICES[key]
    if dev.arch is None or not dev.sms or not dev.bandwidth:
        raise ValueError(f"target {name}: device {key} lacks its CUDA facts (arch, SMs, bandwidth)")
    return Target(name, key, dev, ARCHES[dev.arch])
