"""`build`: validate, schedule, emit and verify the kernels of a YAML file; with --target, compile
the Triton code for a GPU ahead of time and judge it against that GPU's limits.

Exit status: 0 everything requested succeeded; 1 a numerical check failed, or a block compiled for a
--target does not fit it; 2 invalid spec or usage; 3 an internal error (a bug of the tool: the
traceback is printed).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import traceback

from .diagnostics import SpecError
from .emit import BACKENDS
from .files import OutputError, write_set
from .stagefault import StageFault
from .targets import TARGETS, target

MAX_SEED = 2**31 - 1
JSON_SCHEMA = 1  # of the --json report (README, "The --json report"); raised when a field changes meaning
VERIFY_MODULES = ("torch", "triton", "numpy")   # the `verify` extra of pyproject.toml
VERIFY_HINT = ("install the `verify` extra to enable it: pip install 'kernel-builder[verify]' "
               "(in a checkout: pip install -e '.[verify]')")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with one line, never a traceback
        self.print_usage(sys.stderr)
        print(f"build: error: {message}", file=sys.stderr)
        sys.exit(2)


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"the seed must be between 0 and {MAX_SEED}")
    return value


_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _bytes(text: str) -> int:
    """`8589934592`, `8G`, `512M`..."""
    m = re.fullmatch(r"\s*(\d{1,15})\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 8G or 512M")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kernel-builder")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="build", description=__doc__.split("\n\n")[0],
                epilog="Exit status: 0 ok, 1 a numerical check failed or a --target block does not fit, "
                       "2 invalid spec or usage, 3 an internal error (a bug; its traceback is printed).")
    p.add_argument("--version", action="version", version=f"build (kernel-builder) {_version()}",
                   help="print the version and exit")
    p.add_argument("--file", default="kernels.yaml", help="kernel library to read (default: ./kernels.yaml)")
    p.add_argument("--kernel", action="append", metavar="NAME", help="only this kernel (repeatable)")
    p.add_argument("--sizes", metavar="NAME", help="size set to emit and verify (default: each kernel's "
                                                   "default_sizes, normally `small`)")
    p.add_argument("--backend", choices=BACKENDS + ("all",), default="all",
                   help="code generator: triton, pypto, or all of them (default)")
    p.add_argument("--out-dir", default="generated", metavar="DIR",
                   help="where emitted files go, one folder per kernel (default: generated/)")
    p.add_argument("--check", action="store_true", help="CI mode: emit and verify in memory, write nothing")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical checks against the golden")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the deterministic input fixtures (default 0)")
    p.add_argument("--no-input-check", action="store_true",
                   help="skip the index-range check of the inputs before each kernel runs")
    p.add_argument("--max-bytes", type=_bytes, default=None, metavar="SIZE",
                   help="largest total size of one kernel's tensors at a size set, e.g. 16G (default 8G)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    p.add_argument("--graph", action="store_true", help="render the stage graphs and loop blocks instead")
    p.add_argument("--target", action="append", choices=list(TARGETS), metavar="GPU",
                   help=f"compile every loop block's Triton code ahead of time for GPU ({', '.join(TARGETS)}; "
                        "no GPU needed) and report registers, spills, shared memory, warps, programs, tensor "
                        "cores, compile time and a modelled time beside the floor; with --graph, on the loop-block "
                        "clusters (repeatable)")
    p.add_argument("--schema", nargs="?", const="-", metavar="FILE",
                   help="write the JSON Schema of the spec language to FILE (default: stdout), for editors; "
                        "kernels.schema.json is this file")
    p.add_argument("--explain", nargs="?", const="", metavar="RULE",
                   help="say what diagnostic rule RULE means, with a minimal failing example and the fix; "
                        "without RULE, list every rule")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="worker processes: verifications at once (default 1, "
                                                               "in this process, with progress per loop block), and "
                                                               "compiles for --target (default: the number of CPUs)")
    p.add_argument("--no-cache", action="store_true", help="verify everything again: neither read nor record the "
                                                           "verification cache")
    p.add_argument("--cache-dir", metavar="DIR", help="the verification cache (default: $KERNEL_BUILDER_CACHE, else "
                                                      "~/.cache/kernel-builder; safe to delete)")
    from .render import FORMATS as GRAPH_FORMATS

    g = p.add_argument_group("--graph options")
    g.add_argument("--format", choices=GRAPH_FORMATS, help="graph format (default: text, or from the -o extension: "
                                                          ".txt .dot .mmd .svg .png .json)")
    g.add_argument("-o", "--output", action="append", metavar="FILE",
                   help="write the graph to FILE (atomically, only when it changed; repeatable)")
    g.add_argument("--against", metavar="OTHER", help="diff against another YAML file, or a git revision of "
                                                     "this one (`HEAD~1`, `HEAD~1:kernels.yaml`)")
    g.add_argument("--against-kernel", metavar="NAME", help="compare the one --kernel with kernel NAME of OTHER "
                                                           "(default OTHER: the same file)")
    return p


def _missing(modules) -> list[str]:
    """Those of `modules` that are not installed (looked up without importing them)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def _progress(kernel: str, backend: str):
    if not sys.stderr.isatty():
        return None
    return lambda msg: print(f"  [{kernel} {backend}] {msg}...", file=sys.stderr, flush=True)


def _select(lib, names):
    if not names:
        return [lib[n] for n in lib]
    missing = [n for n in names if n not in lib]
    if missing:
        raise UsageError(f"no kernel named {', '.join(missing)} in {lib.path}; it has {', '.join(lib)}")
    return [lib[n] for n in dict.fromkeys(names)]


def _schema(path: str) -> int:
    from .files import write_if_changed
    from .schema import text

    if path == "-":
        print(text(), end="")
        return 0
    try:
        changed = write_if_changed(path, text())
    except OSError as exc:
        print(f"build: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{'wrote' if changed else 'unchanged'} {path}")
    return 0


def _explain(rule_id: str) -> int:
    from . import explain

    if not rule_id:
        print(explain.listing(), end="")
        return 0
    try:
        print(explain.explain(explain.lookup(rule_id)), end="")
    except KeyError as exc:
        print(f"build: error: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.explain is not None:
        return _explain(args.explain)
    if args.schema is not None:
        return _schema(args.schema)
    graph_only = [flag for flag, v in (("--format", args.format), ("-o", args.output), ("--against", args.against),
                                       ("--against-kernel", args.against_kernel)) if v is not None]
    if graph_only and not args.graph:
        parser().error(f"{graph_only[0]} needs --graph")
    if args.jobs is not None and args.jobs < 1:
        parser().error("--jobs needs a count of at least 1")
    targets = [target(name) for name in dict.fromkeys(args.target or [])]
    if targets and _missing(("triton",)):
        parser().error(f"--target compiles with triton, which is not installed; {VERIFY_HINT}")
    from . import load, sol
    from .library import DEFAULT_MAX_BYTES

    try:
        lib = load(args.file, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES)
        kernels = _select(lib, args.kernel)
        for k in kernels:
            if args.sizes is not None and args.sizes not in k.spec.sizes:
                raise UsageError(f"kernel {k.name} has no size set {args.sizes!r}; it has {', '.join(k.spec.sizes)}")
    except SpecError as exc:
        print(exc.report(args.file), file=sys.stderr)
        if args.json:
            print(json.dumps({"schema": JSON_SCHEMA, "status": "invalid",
                              "diagnostics": [d.as_json() for d in exc.diagnostics]}, indent=2))
        return 2
    except UsageError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 2
    for w in lib.warnings:
        print(w.render(), file=sys.stderr)

    if args.graph:
        from .render.command import run as graph

        return graph(args, lib, kernels, targets)

    backends = BACKENDS if args.backend == "all" else (args.backend,)
    # Everything is emitted before anything is written: a build writes all its files or none.
    code = {(k.name, b): k.emit(b, args.sizes) for k in kernels for b in backends}
    paths = {key: f"{key[0]}/{key[0]}_{key[1]}.py" for key in code}
    changed: dict = {}
    if not args.check:
        try:
            changed = write_set(args.out_dir, {paths[key]: text for key, text in code.items()})
        except OutputError as exc:
            print(f"build: error: {exc}; nothing was written", file=sys.stderr)
            return 2
    verify = not args.no_verify
    absent = _missing(VERIFY_MODULES) if verify else []
    if absent:  # a light install: everything but the numerical checks
        print(f"build: verification skipped ({', '.join(absent)} not installed); {VERIFY_HINT}", file=sys.stderr)
        verify = False
    results, failed = [], False
    fits: dict = {}
    took, findings = 0.0, {}
    if targets:
        from .aot import compile_kernels, report as target_report

        fits, took = compile_kernels(kernels, args.sizes, targets, args.jobs, _progress("all", "--target"))
    verified = {}
    if verify:
        from . import verifyjobs
        from .progress import Progress
        from .vcache import Cache

        cache = None if args.no_cache else Cache(args.cache_dir)
        progress = Progress.for_terminal(args.json)
        outcomes = verifyjobs.run(kernels, backends, args.sizes, args.seed, not args.no_input_check, file=args.file,
                                  max_bytes=args.max_bytes or DEFAULT_MAX_BYTES, jobs=args.jobs or 1, cache=cache,
                                  progress=progress)
    for k in kernels:
        tg, sched = k.typed(args.sizes)
        entry = {"kernel": k.name, "line": k.spec.loc.line, "sizes": tg.dims.size_set,
                 "stages": list(tg.stages), "loop_blocks": [b.name for b in sched.blocks],
                 "speed_of_light": sol.report(tg, sched), "backends": {}}
        lines = [f"{k.name} ({k.spec.loc.file}:{k.spec.loc.line}), sizes {tg.dims.size_set}: "
                 f"{len(tg.stages)} stages in {len(sched.blocks)} loop blocks", sol.summary(tg, sched)]
        for backend in backends:
            info: dict = {"status": "emitted"}
            if not args.check:
                path = f"{args.out_dir}/{paths[k.name, backend]}"
                info["file"] = path
                lines.append(f"  {backend}: {'wrote' if changed[paths[k.name, backend]] else 'unchanged'} {path}")
            if verify:
                with progress:
                    outcome = next(outcomes)
                verified[k.name, backend] = outcome.cached
                info.update(outcome.as_json())
                lines += outcome.lines(k.spec.loc.file)
                failed |= not outcome.ok
            entry["backends"][backend] = info
        for t in targets:
            fit = fits[(k.name, t.name)]
            lines += target_report.text(fit)
            entry.setdefault("targets", {})[t.name] = target_report.as_json(fit)
            findings.update({(d.loc, d.rule, d.message): d for d in fit.diagnostics})
            failed |= not fit.ok
        results.append(entry)
        if not args.json:
            print("\n".join(lines), flush=True)
    for key in sorted(findings):  # a stage that variants inherit is reported once
        print(findings[key].render(), file=sys.stderr)
    summary: dict[str, object] = {}
    if verified:
        cached = sum(verified.values())
        where = ("cache off: --no-cache" if cache is None
                 else f"cache: {cache.folder}; --no-cache verifies everything again")
        summary["verifications"] = {"run": len(verified) - cached, "cached": cached, "cache": None if cache is None
                                   else str(cache.folder)}
        if not args.json:
            said = (f"nothing to verify: all {cached} verifications are cached, unchanged since they passed"
                    if cached == len(verified) else f"verified {len(verified) - cached}, cached {cached}")
            print(f"{said} ({where})")
        if cache is not None and cache.unwritable:
            print(f"build: warning: the verification cache could not be written: {cache.unwritable}", file=sys.stderr)
    if targets:
        summary["targets_compile_wall_s"] = round(took, 1)
        if not args.json:
            print(f"compiled {len(kernels)} kernel(s) for {', '.join(t.name for t in targets)} in {took:.1f} s "
                  f"wall clock (a block whose code several kernels share is compiled once, and each of them "
                  f"shows that compile's time; compile times vary from run to run)")
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA, "status": "failed" if failed else "ok", "file": args.file,
                          "verification": "ran" if verify else ("unavailable" if absent else "off"), "kernels": results,
                          **summary, "warnings": [w.as_json() for w in lib.warnings]}, indent=2))
    return 1 if failed else 0


def main() -> None:
    try:
        status = run()
    except KeyboardInterrupt:
        print("build: interrupted", file=sys.stderr)
        status = 130
    except StageFault as exc:  # a bug of an op: the op's traceback, then where in the spec it ran
        cause = exc.__cause__ or exc
        traceback.print_exception(type(cause), cause, cause.__traceback__)
        print(exc.render(), file=sys.stderr)
        status = 3
    except Exception:  # a bug of the tool, never of the input: keep the traceback, say so
        traceback.print_exc()
        print("build: internal error (exit 3): the traceback above is a bug of the tool, please report it",
              file=sys.stderr)
        status = 3
    sys.exit(status)
