"""The verification cache: a successful verification, recorded under a key of everything it depends on.

`build` looks a (kernel, backend, size set, seed) up before verifying it and records it after it
passed; a failure is never recorded, so it always runs again. The key is a hash of:

- the emitted code, the kernel's dims and every tensor type, and the output tolerances;
- for every stage: its op, the source of its golden function and golden method, the golden's
  arguments, and the source of its op module and of every module that one imports (static imports,
  so no module has to be loaded to hash it);
- for every input: the fixture recipe's function source and its arguments (shape, seed, params) and
  the dtype it is cast to;
- the verification machinery: the source of builder/verify.py, golden.py, runtime.py, inits.py,
  inputs.py (and, for PyPTO, plsim.py, the executor) and of what they import;
- the installed torch, triton and numpy versions, the Python version, and what decides the device
  (TRITON_INTERPRET, CUDA_VISIBLE_DEVICES, an NVIDIA device node);
- the seed, whether inputs were value-checked, and the cache format version.

Entries live under `<dir>/verify/`: one JSON file per key, written atomically (a temporary file in
the same folder, then a rename), so concurrent builds never read half an entry and two builds
recording one key both leave a whole file. The folder is disposable: delete it at any time. Where
it is: `--cache-dir`, else $KERNEL_BUILDER_CACHE, else $XDG_CACHE_HOME/kernel-builder, else
~/.cache/kernel-builder. Computing a key needs neither torch nor triton.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

FORMAT = 1
ENV = "KERNEL_BUILDER_CACHE"
PACKAGES = ("builder", "stages")
# What runs a verification; their imports are followed (plsim only for PyPTO: it executes that code).
MACHINERY = ("builder.verify", "builder.golden", "builder.runtime", "builder.inits", "builder.inputs",
             "builder.vcache")
EXECUTORS = {"pypto": ("builder.plsim",)}


def default_dir() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernel-builder"


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


_MODULES: dict[str, Path] = {}  # every module of PACKAGES -> its file


def _modules() -> dict[str, Path]:
    """The modules of PACKAGES, found on disk (nothing is imported)."""
    if not _MODULES:
        for package in PACKAGES:
            spec = importlib.util.find_spec(package)
            for folder in (spec.submodule_search_locations or []) if spec else []:
                for path in sorted(Path(folder).rglob("*.py")):
                    parts = path.relative_to(folder).with_suffix("").parts
                    parts = parts[:-1] if parts[-1] == "__init__" else parts
                    _MODULES.setdefault(".".join((package,) + parts), path)
    return _MODULES


# An import statement anywhere in a file (a superset is harmless: names that are no module are dropped).
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(?P<dots>\.*)(?P<module>[\w.]*)[ \t]+import[ \t]+(?P<what>\([^)]*\)|[^\n#]*)"
                     r"|import[ \t]+(?P<plain>[^\n#]*))", re.MULTILINE)
_FILES: dict[str, tuple[str, list[str]]] = {}  # module -> (hash of its source, modules it imports)


def _module(name: str) -> tuple[str, list[str]]:
    """Hash of a module's source and the modules of PACKAGES it imports (anywhere in the file)."""
    if name not in _FILES:
        path = _modules().get(name)
        if path is None:
            _FILES[name] = ("missing", [])
            return _FILES[name]
        source = path.read_bytes()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = []
        for m in _IMPORT.finditer(source.decode("utf-8", "replace")):
            names = [n.split(" as ")[0].strip(" \t\\()") for n in (m["what"] or m["plain"]).split(",")]
            if m["plain"] is not None:
                deps += names
                continue
            base = m["module"]
            if m["dots"]:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - len(m["dots"]) + 1] + ([base] if base else []))
            deps += [base] + [f"{base}.{n}" for n in names]
        _FILES[name] = (_sha(source), sorted({d for d in deps if d in _modules()}))
    return _FILES[name]


def _closure(roots: list[str]) -> dict[str, str]:
    """Source hash of every module reachable from `roots` through imports inside PACKAGES."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        digest, deps = _module(name)
        found[name] = digest
        todo += deps
    return dict(sorted(found.items()))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=None)
def _source(obj) -> str:
    try:
        return _sha(inspect.getsource(obj))
    except (OSError, TypeError):
        return f"no source: {getattr(obj, '__qualname__', obj)!r}"


def key_parts(kernel, backend: str, sizes: str, seed: int, check_values: bool) -> dict[str, Any]:
    """Everything a verification's outcome depends on (hashes where the text is long)."""
    from .inits import recipe_call

    tg, _ = kernel.typed(sizes)
    stages, op_modules = {}, []
    for st in tg.stages.values():
        op = type(st.op)
        op_modules.append(op.__module__)
        types = {**st.in_types, **st.out_types}
        stages[st.id] = {"op": st.op.name, "golden_fn": _source(st.op.golden_function(st.params, types)),
                         "golden": _source(op.golden), "args": repr(st.op.golden_args(st.params, tg.dims, types))}
    fixtures = {}
    for name, t in tg.inputs.items():
        fn, args = recipe_call(tg, name, seed)
        fixtures[name] = {"fn": _source(fn), "args": repr(sorted(args.items())), "dtype": t.dtype.value}
    tolerances = {"kernel": tg.spec.tolerance.model_dump(),
                  **{name: (out.tolerance or tg.spec.tolerance).model_dump() for name, out in tg.spec.outputs.items()}}
    return {
        "format": FORMAT, "kernel": kernel.name, "backend": backend, "sizes": sizes, "seed": seed,
        "check_values": check_values,
        "code": _sha(kernel.emit(backend, sizes)),
        "dims": dict(tg.dims),
        "types": _sha(json.dumps({ref: t.describe() for ref, t in tg.types.items()}, sort_keys=True)),
        "outputs": dict(tg.outputs),
        "tolerances": tolerances,
        "stages": _sha(json.dumps(stages, sort_keys=True)),
        "fixtures": fixtures,
        "modules": _closure(sorted(set(op_modules)) + list(MACHINERY) + list(EXECUTORS.get(backend, ()))),
        "versions": {"python": sys.version.split()[0], "torch": _version("torch"), "triton": _version("triton"),
                     "numpy": _version("numpy")},
        "device": _device(),
    }


def _device() -> dict:
    """What decides where the code runs. Without a GPU, runtime.prepare_triton sets TRITON_INTERPRET=1
    on first use: unset counts as that, so a key does not change once a verification has run."""
    nvidia = os.path.exists("/dev/nvidiactl")
    return {"TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET") or ("0" if nvidia else "1"),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "nvidia": nvidia}


def key(kernel, backend: str, sizes: str, seed: int, check_values: bool) -> str:
    return _sha(json.dumps(key_parts(kernel, backend, sizes, seed, check_values), sort_keys=True, default=str))


class Cache:
    """Recorded successful verifications under `root`/verify, one JSON file per key."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else default_dir()
        self.folder = self.root / "verify"
        self.unwritable: Optional[str] = None  # why recording failed (the build goes on without it)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[dict]:
        """The recorded entry, or None (also for an unreadable or foreign file: it is simply rerun)."""
        try:
            entry = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key and entry.get("format") == FORMAT else None

    def put(self, key: str, report: dict) -> None:
        """Record a passed verification. Never raises for the folder's sake: a build does not fail
        because its cache cannot be written (`unwritable` says why)."""
        if report.get("status") != "ok":
            raise ValueError("only successful verifications are recorded")
        entry = {"format": FORMAT, "key": key, "recorded": time.strftime("%Y-%m-%d %H:%M:%S"), "report": report}
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(entry, fh)
                os.replace(tmp, path)  # atomic: a reader sees the old file, none, or the whole new one
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            self.unwritable = f"{self.folder}: {exc.strerror or exc}"
