"""Located diagnostics: every problem in a spec is reported as `FILE:LINE:COL: error[RULE]: message`.

Rule ids are stable: tests and users grep for them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable

RULES = {
    "yaml-syntax": "the file is not valid YAML",
    "duplicate-key": "a mapping names the same key twice",
    "unknown-key": "a key the schema does not know",
    "missing-key": "a required key is absent",
    "wrong-type": "a value of the wrong type",
    "unknown-op": "a stage names an op that stages/ does not provide",
    "unknown-ref": "an input names a tensor no kernel input or stage produces",
    "unknown-kernel": "a kernel (for example in `extends:`) that is not defined",
    "cycle": "stages depend on each other in a loop",
    "shape-mismatch": "an edge carries a tensor of another shape than its consumer needs",
    "dtype-mismatch": "an edge carries a tensor of another dtype than its consumer needs",
    "layout-mismatch": "an edge carries RoPE lanes in another layout than its consumer needs",
    "output-not-produced": "a kernel output names a tensor nothing produces",
    "unused": "an input or stage whose result nothing reads",
    "undefined-dim": "a shape or expression uses a dim that is not defined",
    "circular-dim": "dims defined in terms of each other",
    "bad-expr": "an expression that is not plain arithmetic over dims",
    "bad-value": "a value outside the range its parameter accepts",
    "illegal-fuse": "a `fuse:` group the schedule cannot run as one loop block",
}


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    rule: str
    message: str
    loc: Location
    hint: str = ""
    severity: str = "error"

    def __post_init__(self) -> None:
        assert self.rule in RULES, f"unregistered rule id {self.rule!r}"

    def render(self) -> str:
        text = f"{self.loc}: {self.severity}[{self.rule}]: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_json(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "message": self.message,
                "file": self.loc.file, "line": self.loc.line, "col": self.loc.col, "hint": self.hint}


class SpecError(Exception):
    """Raised with every error diagnostic of a file at once."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.loc, d.rule))
        super().__init__("\n".join(d.render() for d in self.diagnostics))


@dataclass
class DiagnosticSink:
    """Collects diagnostics so that one run reports every mistake of a file."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, rule: str, message: str, loc: Location, hint: str = "") -> None:
        self.items.append(Diagnostic(rule, message, loc, hint))

    def warn(self, rule: str, message: str, loc: Location, hint: str = "") -> None:
        self.items.append(Diagnostic(rule, message, loc, hint, severity="warning"))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return sorted((d for d in self.items if d.severity == "warning"), key=lambda d: (d.loc, d.rule))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.errors)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""
