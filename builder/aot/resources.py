"""What a compiled block kernel needs from one SM: the record the worker fills and the rest reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Resources:
    """What the compiled block needs from one SM, per program (registers and spills per thread)."""

    registers: int = 0
    spill_stores: int = 0           # bytes per thread, ptxas -v
    spill_loads: int = 0
    stack: int = 0                  # stack frame bytes per thread (where spills live)
    shared: int = 0                 # bytes of shared memory per program (Triton allocates it dynamically)
    warps: int = 0
    dots: int = 0                   # tl.dot ops in the kernel (TTIR)
    tensor_core_dots: int = 0       # of those, lowered to tensor-core MMA (TTGIR)
    mma: tuple[str, ...] = ()       # tensor-core instructions found in the PTX
    compile_s: float = 0.0
    error: Optional[str] = None     # the compiler's message when the block does not compile

    @property
    def spill(self) -> int:
        return self.spill_stores + self.spill_loads
