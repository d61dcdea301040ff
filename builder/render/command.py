"""`build --graph`: pick kernels and the format, optionally diff against another YAML file or git revision,
render, and print or write the result. Returns the exit status (0 ok, 2 spec or usage error).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ..diagnostics import SpecError
from ..files import write_if_changed
from . import FORMATS, RenderError, format_for, models, render_models
from .model import with_fits


class GraphUsageError(Exception):
    pass


def run(args, lib, kernels, gpus=()) -> int:
    """`args`: the parsed `build` arguments; `lib`/`kernels`: the loaded library and the selected kernels;
    `gpus`: `builder.targets.Target`s to compile the kernels for and show on their loop blocks."""
    try:
        targets = _targets(args)
        if args.against is not None or args.against_kernel is not None:
            views, against = _paired(args, lib, kernels)
        else:
            views, against = [k.typed(args.sizes) for k in kernels], None
        kernel_models = models(views, against)
        if gpus:
            kernel_models = _with_fits(kernel_models, kernels, args, gpus)
        rendered: dict[str, str | bytes] = {}
        for _, fmt in targets:  # render everything before writing anything
            if fmt not in rendered:
                rendered[fmt] = render_models(kernel_models, fmt)
    except SpecError as exc:
        print(exc.report(exc.file or args.against), file=sys.stderr)
        return 2
    except (GraphUsageError, RenderError) as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 2

    for path, fmt in targets:
        data = rendered[fmt]
        if path is None:
            if isinstance(data, bytes):
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            else:
                print(data, end="")
        else:
            changed = write_if_changed(path, data)
            print(f"{'wrote' if changed else 'unchanged'} {path}")
    return 0


def _with_fits(kernel_models, kernels, args, gpus):
    """The models with each selected kernel's blocks annotated by what they compile to on `gpus`."""
    from ..aot import compile_kernels
    from ..aot.report import cluster_fit

    fits, _ = compile_kernels(kernels, args.sizes, gpus, args.jobs)
    by_kernel = {}
    for k in kernels:
        blocks = {}
        for gpu in gpus:
            for b in fits[(k.name, gpu.name)].blocks:
                blocks.setdefault(b.block.name, []).append(cluster_fit(b, gpu))
        by_kernel[k.name] = {name: tuple(f) for name, f in blocks.items()}
    return [with_fits(m, by_kernel[m.name]) if m.name in by_kernel else m for m in kernel_models]


def _targets(args) -> list[tuple[Optional[str], str]]:
    if not args.output:
        fmt = args.format or ("json" if args.json else "text")
        if fmt == "png" and sys.stdout.isatty():
            raise GraphUsageError("png output is binary; write it to a file with -o FILE.png")
        return [(None, fmt)]
    targets = []
    for path in args.output:
        fmt = args.format or format_for(path)
        if fmt is None:
            raise GraphUsageError(f"cannot tell the format of `{path}` from its extension; add --format "
                                  f"({', '.join(FORMATS)}) or use .txt, .dot, .mmd, .svg, .png or .json")
        targets.append((path, fmt))
    return targets


def _paired(args, lib, kernels):
    other = load_other(args.against if args.against is not None else args.file, args.file)
    if args.against_kernel is not None:
        if len(kernels) != 1:
            raise GraphUsageError("--against-kernel compares one kernel: name it with exactly one --kernel")
        if args.against_kernel not in other:
            raise GraphUsageError(f"no kernel named {args.against_kernel} in {other.path}; "
                                  f"it has {', '.join(other)}")
        pairs = [(kernels[0], other[args.against_kernel])]
    else:
        pairs = [(k, other[k.name] if k.name in other else None) for k in kernels]
        if not args.kernel:  # kernels that only the other side has show as removed
            pairs += [(None, other[name]) for name in other if name not in lib]
    for kernel in (k for pair in pairs for k in pair if k is not None):
        if args.sizes is not None and args.sizes not in kernel.spec.sizes:
            raise GraphUsageError(f"kernel {kernel.name} of {other.path if kernel in other.values() else args.file} "
                                  f"has no size set {args.sizes!r}; it has {', '.join(kernel.spec.sizes)}")
    views = [k.typed(args.sizes) if k else None for k, _ in pairs]
    against = [o.typed(args.sizes) if o else None for _, o in pairs]
    return views, against


def load_other(spec: str, file: str):
    """The library to compare against: a YAML path, `REV:PATH` (git show), or a bare revision of `file`.

    Raises SpecError (its `file` attribute names the source) when that YAML is invalid.
    """
    from .. import load

    if Path(spec).is_file():
        label, text = spec, None
    else:
        rel = os.path.relpath(file)
        label = spec if ":" in spec else f"{spec}:{rel}"
        text = _git_show(spec if ":" in spec else f"{spec}:./{rel}", spec)
    try:
        return load(label, text=text)
    except SpecError as exc:
        exc.file = label
        raise


def _git_show(git_spec: str, spec: str) -> str:
    if git_spec.startswith("-"):  # `--against=--output=F:x` must never reach git as an option
        raise GraphUsageError(f"--against {spec}: not a file, and not a revision (it starts with `-`)")
    try:
        proc = subprocess.run(["git", "show", "--end-of-options", git_spec], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it did not answer within 60 s"
        raise GraphUsageError(f"--against {spec}: not a file, and git cannot run to read it as a revision "
                              f"({why})") from None
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise GraphUsageError(f"--against {spec}: not a file, and `git show {git_spec}` failed: {why}")
    return proc.stdout
