"""An exception raised inside a stage op's code, located at the stage that ran it.

builder/ calls into an op (infer, tiles, domain, tile bodies, golden) only through `in_stage`: what the
op raises, other than the usage errors it is allowed to raise (StageError, ExprError), is a bug of the
op, reported as `FILE:LINE:COL: internal error in stage ID (op): ...` with its traceback kept (the
original exception is the `__cause__`), and exit status 3, never as a usage error.
"""
from __future__ import annotations

from .diagnostics import Location


class StageFault(Exception):
    """An op's code raised while working on one stage; `__cause__` is what it raised."""

    def __init__(self, stage: str, op: str, loc: Location, during: str, cause: BaseException):
        self.stage, self.op, self.loc, self.during = stage, op, loc, during
        what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"{loc}: internal error in stage {stage} ({op}): {what} (while {during})")

    def render(self) -> str:
        """The located line and a hint, as `build` prints them below the op's traceback."""
        return f"{self}\n  hint: a bug of op `{self.op}` (stages/), not of the spec; the traceback above shows where"


class in_stage:  # lower case: used like a function, `with in_stage(...)`
    """Run an op's code for `stage`; exceptions of the `allowed` types pass unchanged. A class, not a
    generator-based context manager: it is entered a few times per stage, and costs a third as much."""

    def __init__(self, stage: str, op: str, loc: Location, during: str, allowed: tuple = ()):
        self.stage, self.op, self.loc, self.during, self.allowed = stage, op, loc, during, allowed

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> None:  # never swallows: what it does not wrap propagates
        if isinstance(exc, Exception) and not isinstance(exc, (StageFault,) + self.allowed):
            raise StageFault(self.stage, self.op, self.loc, self.during, exc) from exc
