"""The comparison policies of `tolerance:` (pypto-lib's comparators), as self-contained torch functions.

`verify.compare` judges every output with `judge`; the PyPTO backend copies `judge` and
`tolerance_compare` verbatim into a generated file whose outputs need a policy that pypto-lib's
`golden` package does not offer (integer codes, positive values, a reference recomputed from the
kernel's own outputs), so the file's harness and this tool can never disagree.
"""
from __future__ import annotations


def judge(actual, expected, *, compare="allclose", rtol=0.0, atol=0.0, max_error_ratio=0.0, diff=None,
          max_step=None, max_row_ratio=None, positive=False, allowed_bad="round_half_even"):
    """(ok, figures) of one output under one policy, both sides flattened in fp32 (fp64 for integers
    and fp64 data, which it holds exactly). `figures`: bad points, the count allowed
    (`round(max_error_ratio * numel)`, pypto-lib's rounding, or with `allowed_bad="floor"` the largest
    count whose ratio to numel is at most max_error_ratio), the largest absolute error, the largest relative error
    (allclose: over points whose |expected| > atol; reldiff: its rdiff), NaN/Inf count and a problem
    that fails the output whatever the count (a code step, a full row, a value <= 0), or ""."""
    import torch

    small_floats = all(t.is_floating_point() and t.element_size() <= 4 for t in (actual, expected))
    work = torch.float32 if small_floats else torch.float64
    width = actual.shape[-1] if actual.dim() else 1
    a, e = actual.to(work).flatten(), expected.to(work).flatten()
    allowed = round(max_error_ratio * a.numel())
    if allowed_bad == "floor":
        allowed = int(max_error_ratio * a.numel())
        while allowed > 0 and allowed / a.numel() > max_error_ratio:
            allowed -= 1
        while (allowed + 1) / a.numel() <= max_error_ratio:
            allowed += 1
    figures = {"bad": 0, "allowed": allowed, "max_abs_err": 0.0, "max_rel_err": 0.0, "nonfinite": 0, "problem": ""}
    if a.numel() == 0:
        return True, figures
    err = (a - e).abs_()
    if not bool(torch.isfinite(err.max())):  # a - e is finite wherever both are
        figures["nonfinite"] = int((~torch.isfinite(a)).sum().item() + (~torch.isfinite(e)).sum().item())
        err[~(torch.isfinite(a) & torch.isfinite(e))] = float("inf")
    magnitude = e.abs()  # not in place: `e` may be the caller's tensor
    if compare == "allclose":
        bad = ~(err <= magnitude * rtol + atol)
        rel = torch.where(magnitude > atol, err / magnitude, 0.0)
    elif compare == "reldiff":
        floor = torch.full_like(a, (1.0 / (1 << 14)) / diff)
        rel = torch.where(err < diff, err, err / (torch.maximum(torch.maximum(a.abs(), magnitude), floor) + 1e-9))
        bad = ~(rel <= diff)
    else:  # integer codes: any difference is a changed code
        bad = ~(err == 0)
        rel = torch.zeros_like(err)
        worst = err.max().item()
        per_row = bad.reshape(-1, width).sum(dim=-1)
        row_limit = int((max_row_ratio if max_row_ratio is not None else 1.0) * width)
        if worst > max_step:
            figures["problem"] = f"a code differs by {worst:g} > max_step {max_step}"
        elif int(per_row.max().item()) > row_limit:
            row = int(per_row.argmax().item())
            figures["problem"] = f"row {row} has {int(per_row[row].item())} changed codes > {row_limit}"
    if positive and not figures["problem"] and bool(((a <= 0) | (e <= 0)).any()):
        figures["problem"] = "a value <= 0 where every value must be positive"
    figures.update(bad=int(bad.count_nonzero().item()), max_abs_err=err.max().item(), max_rel_err=rel.max().item())
    ok = figures["nonfinite"] == 0 and not figures["problem"] and figures["bad"] <= figures["allowed"]
    return ok, figures


def tolerance_compare(*, given=None, **policy):
    """A comparator in pypto-lib's `compare_fn` form for `judge` under `policy`; with `given`, the
    expected value is `given(tensors)` on the inputs and the kernel's own outputs instead."""

    def compare(actual, expected, *, actual_outputs, expected_outputs, inputs, rtol, atol):
        if given is not None:
            expected = given({**inputs, **actual_outputs})
        ok, figures = judge(actual.cpu(), expected.cpu(), **policy)
        return ok, "" if ok else f"    {policy}: {figures}"

    return compare
