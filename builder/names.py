"""The names a kernels.yaml may give (kernels, size sets, dims, inputs, stages, outputs), and the few
that generated files keep for themselves.

A name becomes an identifier in generated Python and part of an output path, so it must be a plain
identifier: not a keyword or builtin, not one of the top-level names every generated file defines,
and not starting with `__` (the emitters' placeholders). Everything else a generated file defines
(locals, buffers, constants) is namespaced by the emitters, so users never need to know those.
"""
from __future__ import annotations

import builtins
import keyword
import re

MAX_NAME = 64
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Top-level names of the generated files (imports, helpers, API functions) shared by every backend.
RESERVED = frozenset({
    "torch", "triton", "tl", "pl", "argparse",
    "run", "check_inputs", "EXPECTED_INPUTS", "round_bf16", "round_half_even",
    "build_tensor_specs", "TensorSpec", "ratio_allclose", "ratio_reldiff", "run_jit", "judge", "tolerance_compare",
})
# Prefixes of top-level functions copied verbatim from stages/ and builder/inits.py.
RESERVED_PREFIXES = ("golden_", "init_", "__")
_BUILTINS = frozenset(dir(builtins))


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a kernel, size set, dim, input, stage or output; None when it can."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "..."
    if len(name) > MAX_NAME:
        return f"`{shown!r}` is longer than {MAX_NAME} characters"
    if not IDENTIFIER.match(name):
        return f"{shown!r} is not an identifier (letters, digits and `_`, not starting with a digit)"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"`{name}` is a Python keyword"
    if name in _BUILTINS:
        return f"`{name}` is a Python builtin"
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        return f"`{name}` is reserved by the generated code"
    return None


NAME_HINT = (f"use letters, digits and `_` (at most {MAX_NAME}); keywords, builtins, names starting with "
             f"{', '.join(f'`{p}`' for p in RESERVED_PREFIXES)} and {', '.join(sorted(RESERVED))} are reserved")
