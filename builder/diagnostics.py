"""Located diagnostics: every problem in a spec is reported as `FILE:LINE:COL: error[RULE]: message`.

Rule ids are stable: tests and users grep for them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

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
    "bad-name": "a name that cannot become an identifier of generated code or a file name",
    "bad-tag": "a YAML tag outside the core schema (a spec holds only strings, numbers, booleans, null)",
    "missing-file": "the spec file does not exist",
    "not-a-file": "the spec path is not a regular file, or cannot be opened",
    "file-too-large": "the spec file is larger than the loader reads",
    "too-deep": "YAML nested deeper than the loader allows",
    "too-many-nodes": "YAML whose aliases expand to more nodes than the loader allows",
    "expr-too-complex": "a dim expression beyond the evaluator's bounds (length, operations, magnitude)",
    "tensor-too-large": "a tensor larger than the byte limit (`--max-bytes`)",
    "too-many-stages": "a kernel with more stages than the loader allows",
    "gpu-resources": "a loop block compiled for a `--target` GPU does not compile, exceeds its shared memory, or spills",
    "gpu-underuse": "a loop block compiled for a `--target` GPU leaves tensor cores or SMs idle (a warning)",
}


# Fallback hint of each rule, for diagnostics raised without a more specific one: every error a user
# sees says what to do about it.
DEFAULT_HINTS = {
    "yaml-syntax": "check indentation and that every `key: value` pair has a space after the colon",
    "duplicate-key": "keep one of the two keys",
    "unknown-key": "check the spelling against the schema (builder/spec.py, or the op's params in stages/)",
    "missing-key": "add the key",
    "wrong-type": "check the value's type against the schema",
    "unknown-op": "name one of the op modules in stages/",
    "unknown-ref": "write a kernel input name or `stage_id.output_port`",
    "unknown-kernel": "name a kernel defined under `kernels:`",
    "cycle": "a stage may only read tensors produced before it",
    "shape-mismatch": "make the producer's shape match what this stage needs, or wire another tensor",
    "dtype-mismatch": "make the producer's dtype match what this stage needs, or insert a cast stage",
    "layout-mismatch": "make the producer and this stage agree on `layout:`",
    "output-not-produced": "name `stage_id.output_port` of a stage, or a kernel input",
    "unused": "remove it, or wire it into a stage",
    "undefined-dim": "define the dim under `dims:` or in every size set",
    "circular-dim": "one of the dims must come from the size sets",
    "bad-expr": "write plain arithmetic over dims and numbers: + - * / // % **, min(), max()",
    "bad-value": "see the accepted range in the op's or schema's description",
    "illegal-fuse": "fuse only adjacent stages with one iteration domain, or drop the `fuse:` group",
    "bad-name": "use letters, digits and `_`, starting with a letter",
    "bad-tag": "remove the tag",
    "missing-file": "run `build` where kernels.yaml is, or name the file with `--file`",
    "not-a-file": "name a YAML file with `--file`",
    "file-too-large": "split the library into several files",
    "too-deep": "a kernel spec needs only a few levels of nesting",
    "too-many-nodes": "use fewer or smaller aliases",
    "expr-too-complex": "write a short expression; compute large constants outside the spec",
    "tensor-too-large": "use smaller sizes, or raise the limit with `--max-bytes`",
    "too-many-stages": "split the kernel",
    "gpu-resources": "change the tile params (`block_*`) of the block's stages",
    "gpu-underuse": "change the tile params (`block_*`) of the block's stages",
}
assert set(DEFAULT_HINTS) == set(RULES)


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
