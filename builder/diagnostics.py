"""Located diagnostics: every problem in a spec is reported as `FILE:LINE:COL: error[RULE]: message`.

Rule ids are stable: tests and users grep for them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional

from .rules import CATALOGUE

# Each rule's summary, and the fallback hint of diagnostics raised without a more specific one (every
# error a user sees says what to do about it); both from the one table of builder/rules.py.
RULES = {r.id: r.summary for r in CATALOGUE}
DEFAULT_HINTS = {r.id: r.hint for r in CATALOGUE}


class Location(NamedTuple):
    """A place in a spec file (a tuple, so that a loader can make one per YAML node cheaply)."""

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

    file: Optional[str] = None  # set where the file is known under another name (`build --graph --against`)

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.loc, d.rule))
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    def report(self, file: str) -> str:
        """Every diagnostic, then a count that says nothing was written (what the CLI prints)."""
        n = len(self.diagnostics)
        return "\n".join([d.render() for d in self.diagnostics]
                         + [f"{file}: {n} error{'s' * (n != 1)}; nothing was written"])


@dataclass
class DiagnosticSink:
    """Collects diagnostics so that one run reports every mistake of a file."""

    items: list[Diagnostic] = field(default_factory=list)
    error_count: int = 0  # steps compare it before and after themselves (a count, not a scan per kernel)

    def error(self, rule: str, message: str, loc: Location, hint: str = "") -> None:
        self.items.append(Diagnostic(rule, message, loc, hint or DEFAULT_HINTS.get(rule, "")))
        self.error_count += 1

    def warn(self, rule: str, message: str, loc: Location, hint: str = "") -> None:
        self.items.append(Diagnostic(rule, message, loc, hint or DEFAULT_HINTS.get(rule, ""), severity="warning"))

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
