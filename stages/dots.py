"""`tl.dot` on tensor cores without losing exactness against the golden.

bf16 values are exact in tf32, so a dot of bf16-valued fp32 tiles with `input_precision="tf32"` gives
exact products with fp32 accumulation on a GPU's tensor cores, and the CPU interpreter (which computes
every dot in fp32) gives the same. An operand that is not bf16-valued (an fp32 softmax P, say) is split
into a bf16-valued head and its remainder, one dot each: the remainder is at most 2^-8 of the value,
so rounding it to tf32 costs at most 2^-19 relative, far inside any tolerance in use. Two fp32
operands use Triton's 3xTF32 (`input_precision="tf32x3"`), which tensor cores run at fp32 accuracy.
"""
from __future__ import annotations


def exact_dot(a: str, b: str, a_exact: bool = True, b_exact: bool = True,
              acc: str = "") -> tuple[list[str], str]:
    """(lines defining a split head, code of `a @ b`) for fp32 tiles `a` and `b`; `*_exact` says the
    operand holds bf16 values. An inexact operand must be a plain local name. With `acc`, the code
    is `acc + a @ b`, accumulated by the dot itself (as tensor cores do, with no separate add)."""
    if a_exact and b_exact:
        return [], _dot(a, b, acc)
    if not (a_exact or b_exact):
        return [], _dot(a, b, acc, "tf32x3")
    x = a if not a_exact else b
    head, rest = f"{x}_hi", f"{x}_lo"
    lines = [f"{head} = {x}.to(tl.bfloat16).to(tl.float32)  # bf16-valued, exact in tf32",
             f"{rest} = {x} - {head}"]
    (p1, q1), (p2, q2) = [(head, b), (rest, b)] if not a_exact else [(a, head), (a, rest)]
    if acc:
        return lines, _dot(p2, q2, _dot(p1, q1, acc))
    return lines, f"{_dot(p1, q1)} + {_dot(p2, q2)}"


def _dot(a: str, b: str, acc: str = "", precision: str = "tf32") -> str:
    return f'tl.dot({a}, {b}, {acc + ", " if acc else ""}input_precision="{precision}")'
