"""`build --explain [RULE]`, and the README's rule list, rendered from builder/rules.py.

`python -m builder.explain --readme README.md` rewrites the list between the README's markers
(tests/test_rules.py fails while it is stale).
"""
from __future__ import annotations

import argparse
import textwrap

from .rules import BY_ID, CATALOGUE, Rule

WIDTH = 100
BEGIN = "<!-- rules: generated from builder/rules.py by `python -m builder.explain --readme README.md` -->"
END = "<!-- rules: end -->"
_COMMAND = {"spec": "build --file example.yaml --check --no-verify",
            "target": "build --file example.yaml --check --no-verify --target cuda:sm_90"}


def _para(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH)


def explain(rule: Rule) -> str:
    """What the rule means, a minimal failing example and the fix."""
    lines = [f"{rule.severity}[{rule.id}]: {rule.summary}", ""] + _para(rule.explain) + [""]
    if rule.kind == "file":
        lines += ["Situation:", "", "    " + rule.example, ""]
    else:
        lines += [f"Example (`{_COMMAND[rule.kind]}` reports {rule.severity}[{rule.id}]):", ""]
        lines += ["    " + line if line else "" for line in rule.example.rstrip("\n").split("\n")] + [""]
    return "\n".join(lines + _para("Fix: " + rule.fix)) + "\n"


def listing() -> str:
    """Every rule with its one-line summary."""
    width = max(len(r.id) for r in CATALOGUE)
    lines = [f"{r.id:<{width}}  {r.summary}" for r in CATALOGUE]
    tail = "`build --explain RULE` says what a rule means, with a failing example and the fix."
    return "\n".join(lines + ["", tail]) + "\n"


def markdown() -> str:
    """The README's table of rules, between its markers."""
    rows = [f"| `{r.id}` | {r.severity} | {r.summary} |" for r in CATALOGUE]
    return "\n".join([BEGIN, "| rule | severity | what it flags |", "| --- | --- | --- |"] + rows + [END])


def readme_section(text: str) -> str:
    """The generated section of a README's text (ValueError when its markers are missing)."""
    if BEGIN not in text or END not in text:
        raise ValueError("the README has no rule-list markers")
    return text[text.index(BEGIN):text.index(END) + len(END)]


def update_readme(path: str) -> bool:
    """Rewrite the rule list of the README at `path`; True when it changed."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    new = text.replace(readme_section(text), markdown())
    if new != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return new != text


def lookup(rule_id: str) -> Rule:
    """The rule named `rule_id`; KeyError suggesting the closest id otherwise."""
    if rule_id not in BY_ID:
        from .diagnostics import did_you_mean

        raise KeyError(f"no rule {rule_id!r}" + (f"; {did_you_mean(rule_id, BY_ID)}" if did_you_mean(rule_id, BY_ID)
                                                 else "; `build --explain` lists them"))
    return BY_ID[rule_id]


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m builder.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", metavar="FILE", required=True, help="the README whose rule list to rewrite")
    args = p.parse_args()
    print(f"{'updated' if update_readme(args.readme) else 'unchanged'} {args.readme}")
