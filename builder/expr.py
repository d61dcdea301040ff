"""Dim expressions: plain arithmetic over named dims (`D - ROPE`, `O_GROUPS * T`, `D ** -0.5`).

Parsed with `ast` and evaluated by a small whitelist, never `eval`. An expression is untrusted input,
so its cost is bounded: its length and operation count, exponents (no `10 ** 10 ** 10`), and every
intermediate value (integers within int64, floats finite and real).
"""
from __future__ import annotations

import ast
import math
import operator
from functools import lru_cache
from typing import Mapping

MAX_TEXT = 200
MAX_NODES = 64
MAX_EXPONENT = 64
INT64 = 2**63

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_FUNCS = {"min": min, "max": max}


class ExprError(ValueError):
    """`kind` is `bad-expr`, `expr-too-complex` or `undefined-dim` (a diagnostic rule id); `names` lists
    the unknown dims."""

    def __init__(self, kind: str, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind, self.names = kind, names


@lru_cache(maxsize=4096)
def _parse(text: str) -> ast.expr:
    text = str(text)
    if len(text) > MAX_TEXT:
        raise ExprError("expr-too-complex", f"`{text[:40]}...` is longer than {MAX_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):  # ValueError: a NUL character
        raise ExprError("bad-expr", f"`{text}` is not an arithmetic expression") from None
    except (RecursionError, MemoryError):
        raise ExprError("expr-too-complex", f"`{text[:40]}` nests too deeply") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExprError("expr-too-complex", f"`{text[:40]}...` has more than {MAX_NODES} terms and operators")
    for node in nodes:
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Call, ast.Load,
                               ast.USub, ast.UAdd, *_BINOPS))
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            ok = False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                                               and not node.keywords and len(node.args) >= 2
                                               and not any(isinstance(a, ast.Starred) for a in node.args)):
            raise ExprError("bad-expr", f"`{text}` calls `{ast.unparse(node)}`; min() and max() take two or "
                                        "more expressions")
        if not ok:
            raise ExprError("bad-expr", f"`{text}` uses `{ast.unparse(node)}`; only + - * / // % **, "
                                        "min() and max() over dims and numbers are allowed")
    return tree


def names(text: str | int | float) -> set[str]:
    """The dim names an expression reads (function names excluded)."""
    if isinstance(text, (int, float)):
        return set()
    return set(_names(text))


@lru_cache(maxsize=4096)  # a dim is evaluated for every tensor of every kernel: walk each text once
def _names(text: str) -> frozenset[str]:
    tree = _parse(text)
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in funcs)


def evaluate(text: str | int | float, env: Mapping[str, int | float]) -> int | float:
    if isinstance(text, bool):
        raise ExprError("bad-expr", f"`{text}` is a boolean, not a number")
    if isinstance(text, (int, float)):
        return _checked(text, str(text))
    tree = _parse(text)
    missing = tuple(sorted(names(text) - set(env)))
    if missing:
        raise ExprError("undefined-dim", f"`{text}` uses undefined dim(s) {', '.join(missing)}", missing)

    return _value(tree, text, env)


def _value(node: ast.expr, text: str, env: Mapping[str, int | float]) -> int | float:
    """The value of a node of `text`'s (checked) tree. A module function, not a closure of `evaluate`:
    a recursive closure refers to itself, and each call would leave a reference cycle to collect."""
    if isinstance(node, ast.Constant):
        return _checked(node.value, text)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _value(node.operand, text, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # _parse admits calls of min and max only
        return _FUNCS[node.func.id](*(_value(a, text, env) for a in node.args))
    assert isinstance(node, ast.BinOp)  # _parse admits nothing else
    left, right = _value(node.left, text, env), _value(node.right, text, env)
    if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or isinstance(node.left, ast.BinOp)
                                         and isinstance(node.left.op, ast.Pow)):
        raise ExprError("expr-too-complex", f"`{text}`: exponents are limited to {MAX_EXPONENT} and "
                                            "cannot be stacked")
    try:
        return _checked(_BINOPS[type(node.op)](left, right), text)
    except ZeroDivisionError:
        raise ExprError("bad-expr", f"`{text}` divides by zero") from None
    except OverflowError:
        raise ExprError("expr-too-complex", f"`{text}` overflows") from None


def _checked(value, text: str):
    """A value every later step can hold: a real, finite number; integers within int64."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError("bad-expr", f"`{text}` is not a real number (got {type(value).__name__})")
    if isinstance(value, int) and not -INT64 <= value < INT64:
        raise ExprError("expr-too-complex", f"`{text}` leaves the int64 range")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("expr-too-complex", f"`{text}` is not finite")
    return value


def normalize(text: str | int | float) -> str:
    """Canonical spelling of an expression, so that `ROPE//2` and `ROPE // 2` compare equal."""
    return str(text) if isinstance(text, (int, float)) else _unparse(text)


@lru_cache(maxsize=4096)
def _unparse(text: str) -> str:
    return ast.unparse(_parse(text))


def quotient(text: str | int, divisor: str | int) -> str:
    """`text // divisor` as an expression, cancelling a factor: `G * T` over `G` is `T`."""
    tree, div = _parse(str(text)), normalize(divisor)
    if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Mult):
        if ast.unparse(tree.left) == div:
            return ast.unparse(tree.right)
        if ast.unparse(tree.right) == div:
            return ast.unparse(tree.left)
    return f"({text}) // {divisor}" if not str(text).isidentifier() else f"{text} // {divisor}"


def parse_tree(text: str) -> ast.expr:
    """The checked syntax tree of an expression (ExprError if it is not plain arithmetic)."""
    return _parse(str(text))


def unparse_names(tree: ast.expr, rename) -> str:
    """Canonical code of `tree` with each dim name `n` written as `rename(n)` (function names kept)."""
    if isinstance(tree, ast.Name):  # most extents are one dim: no copy of the tree
        return rename(tree.id)

    class Rename(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.Call:
            node.args = [self.visit(a) for a in node.args]
            return node

        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.copy_location(ast.Name(rename(node.id), ast.Load()), node)

    import copy

    return ast.unparse(Rename().visit(copy.deepcopy(tree)))
