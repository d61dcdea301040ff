"""Dim expressions: plain arithmetic over named dims (`D - ROPE`, `O_GROUPS * T`, `D ** -0.5`).

Parsed with `ast` and evaluated by a small whitelist, never `eval`.
"""
from __future__ import annotations

import ast
import operator
from typing import Mapping

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_FUNCS = {"min": min, "max": max}


class ExprError(ValueError):
    """`kind` is `bad-expr` or `undefined-dim`; `names` lists the unknown dims."""

    def __init__(self, kind: str, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind, self.names = kind, names


def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError:
        raise ExprError("bad-expr", f"`{text}` is not an arithmetic expression") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Call, ast.Load,
                               ast.USub, ast.UAdd, *_BINOPS))
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            ok = False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                                               and not node.keywords):
            ok = False
        if not ok:
            raise ExprError("bad-expr", f"`{text}` uses `{ast.unparse(node)}`; only + - * / // % **, "
                                        "min() and max() over dims and numbers are allowed")
    return tree


def names(text: str | int | float) -> set[str]:
    """The dim names an expression reads (function names excluded)."""
    if isinstance(text, (int, float)):
        return set()
    tree = _parse(text)
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in funcs}


def evaluate(text: str | int | float, env: Mapping[str, int | float]) -> int | float:
    if isinstance(text, bool):
        raise ExprError("bad-expr", f"`{text}` is a boolean, not a number")
    if isinstance(text, (int, float)):
        return text
    tree = _parse(text)
    missing = tuple(sorted(names(text) - set(env)))
    if missing:
        raise ExprError("undefined-dim", f"`{text}` uses undefined dim(s) {', '.join(missing)}", missing)

    def ev(node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.Call):
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        try:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        except ZeroDivisionError:
            raise ExprError("bad-expr", f"`{text}` divides by zero") from None

    return ev(tree)


def normalize(text: str | int | float) -> str:
    """Canonical spelling of an expression, so that `ROPE//2` and `ROPE // 2` compare equal."""
    return str(text) if isinstance(text, (int, float)) else ast.unparse(_parse(text))


def quotient(text: str | int, divisor: str | int) -> str:
    """`text // divisor` as an expression, cancelling a factor: `G * T` over `G` is `T`."""
    tree, div = _parse(str(text)), normalize(divisor)
    if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Mult):
        if ast.unparse(tree.left) == div:
            return ast.unparse(tree.right)
        if ast.unparse(tree.right) == div:
            return ast.unparse(tree.left)
    return f"({text}) // {divisor}" if not str(text).isidentifier() else f"{text} // {divisor}"
