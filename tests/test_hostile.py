"""Hostile and careless input: a kernels.yaml is data. No case may run code, write outside `--out-dir`,
hang, exhaust memory or end in a traceback; each gives a located `error[RULE]` (or a one-line usage
error for a CLI argument) with exit status 2, and writes nothing.

Every case runs `build` in its own process under a time limit and an address-space limit.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.spec_helpers import BUNDLED, MAIN, REPO, assert_no_traceback, edit, parse_report

TIMEOUT_S = 60
MEMORY = 3 * 2**30

TINY = """version: 1
kernels:
  tiny:
    doc: one inverse rotation
    sizes: {small: {T: 2, H: 4, R: 8}}
    dims: {HALF: R // 2}
    inputs:
      even: {shape: [T, H, HALF], dtype: bf16, layout: interleave, init: {uniform: {}}}
      odd: {shape: [T, H, HALF], dtype: bf16, layout: interleave, init: {uniform: {}}}
      cos: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: cos}}}
      sin: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: sin}}}
    stages:
      rot: {op: rope_apply, in: {even: even, odd: odd, cos: cos, sin: sin}, params: {direction: inverse, block_h: 4}}
    outputs:
      out: {from: rot.even}
"""


def tiny(old: str = "", new: str = "") -> str:
    return TINY.replace(old, new, 1) if old else TINY


@dataclass
class Hostile:
    """A case: the spec text (or a path to pass to --file), extra CLI arguments, and what must come out:
    a diagnostic `rule`, or a usage error mentioning `usage`."""

    spec: Optional[str] = None
    args: tuple[str, ...] = ()
    rule: Optional[str] = None
    usage: Optional[str] = None
    file: Optional[Callable[[Path], str]] = None   # makes the --file path in the case's folder
    setup: Optional[Callable[[Path], None]] = None
    limits: dict = field(default_factory=dict)      # extra rlimits for the build process


def _bundled(old: str, new: str, after=MAIN) -> str:
    return edit(BUNDLED.read_text(), old, new, after=after)


def _chain(n: int) -> str:
    kernels = ["  k0:\n    extends: nowhere\n"] + [f"  k{i}:\n    extends: k{i - 1}\n" for i in range(1, n)]
    return "version: 1\nkernels:\n" + "".join(kernels)


def _many_stages(n: int) -> str:
    stages = "".join(f"      s{i}: {{op: rope_apply}}\n" for i in range(n))
    return tiny("    stages:\n", "    stages:\n" + stages)


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.yaml")
    return str(folder / "pipe.yaml")


def _out_is_a_file(folder: Path) -> None:
    (folder / "out").write_text("not a folder")


CASES = {
    # critical: names become code
    "output name with code": Hostile(tiny("      out: {from",
                                          '      \'x": __import__("os").system("touch PWNED"), "y\': {from'),
                                     rule="bad-name"),
    "kernel name with a newline and code": Hostile(tiny("  tiny:\n",
                                                        '  "k\\nimport os; os.system(\'touch PWNED\')":\n'),
                                                   rule="bad-name"),
    # high: paths and names that are not identifiers
    "kernel name ../../escaped": Hostile(tiny("  tiny:\n", "  ../../escaped:\n"), rule="bad-name"),
    "kernel name /abs/path": Hostile(tiny("  tiny:\n", "  /tmp/abs/path:\n"), rule="bad-name"),
    "kernel name of 10000 characters": Hostile(tiny() + "  ? " + "k" * 10_000 + "\n  : {extends: tiny}\n",
                                               rule="bad-name"),
    "stage id class": Hostile(tiny("      rot: {", "      class: {").replace("rot.even", "class.even"),
                              rule="bad-name"),
    "input name None": Hostile(tiny("      odd: {shape", "      None: {shape"), rule="bad-name"),
    "input name a-b": Hostile(tiny("      odd: {shape", "      a-b: {shape"), rule="bad-name"),
    "input name x y": Hostile(tiny("      odd: {shape", "      x y: {shape"), rule="bad-name"),
    "input name locals": Hostile(tiny("      odd: {shape", "      locals: {shape"), rule="bad-name"),
    "dim name shared with an input": Hostile(tiny("    dims: {HALF: R // 2}", "    dims: {HALF: R // 2, odd: 2}"),
                                             rule="bad-name"),
    "kernel names equal after case-folding": Hostile(tiny() + "  TINY:\n    extends: tiny\n", rule="bad-name"),
    # medium: bounded work
    "billion laughs": Hostile(_billion_laughs(), rule="too-many-nodes"),
    "exponent tower in an unused dim": Hostile(tiny("{HALF: R // 2}", "{HALF: R // 2, BIG: 10**10**10}"),
                                               rule="expr-too-complex"),
    "--file /dev/zero": Hostile(file=lambda d: "/dev/zero", rule="not-a-file"),
    "--file a FIFO": Hostile(file=_fifo, rule="not-a-file"),
    "--file a directory": Hostile(file=lambda d: str(d), rule="not-a-file"),
    "T = 10^8": Hostile(tiny("T: 2, H: 4", "T: 100000000, H: 4"), rule="tensor-too-large"),
    "T = 10^400": Hostile(tiny("T: 2, H: 4", "T: 1" + "0" * 400 + ", H: 4"), rule="bad-value"),
    "10^5 stages": Hostile(_many_stages(100_000), rule="too-many-stages"),
    # tracebacks before
    "tag !!python/name": Hostile(tiny("doc: one inverse rotation", "doc: !!python/name:os.system x"), rule="bad-tag"),
    "tag !foo": Hostile(tiny("doc: one inverse rotation", "doc: !foo x"), rule="bad-tag"),
    "tag !!int abc": Hostile(tiny("doc: one inverse rotation", "doc: !!int abc"), rule="wrong-type"),
    "tag !!binary": Hostile(tiny("doc: one inverse rotation", "doc: !!binary aGVsbG8="), rule="bad-tag"),
    "list as a key": Hostile(tiny("    doc: one", "    [a, b]: 1\n    doc: one"), rule="wrong-type"),
    "map as a key": Hostile(tiny("    doc: one", "    {a: b}: 1\n    doc: one"), rule="wrong-type"),
    "<<: 5": Hostile(tiny("    doc: one", "    <<: 5\n    doc: one"), rule="wrong-type"),
    "recursive alias": Hostile(tiny("    doc: one", "    extra: &r [*r]\n    doc: one"), rule="yaml-syntax"),
    "nesting 500 deep": Hostile(tiny("    doc: one", "    extra: " + "[" * 500 + "]" * 500 + "\n    doc: one"),
                                rule="too-deep"),
    "3000-deep extends chain": Hostile(_chain(3000), rule="unknown-kernel"),
    "min()": Hostile(tiny("{HALF: R // 2}", "{HALF: min()}"), rule="bad-expr"),
    "(-8)**0.5": Hostile(tiny("{HALF: R // 2}", "{HALF: (-8)**0.5}"), rule="bad-expr"),
    "2.0**10000": Hostile(tiny("{HALF: R // 2}", "{HALF: 2.0**10000}"), rule="expr-too-complex"),
    "3000-term sum": Hostile(tiny("{HALF: R // 2}", "{HALF: " + "+".join(["1"] * 3000) + "}"),
                             rule="expr-too-complex"),
    "--seed 99999999999999999999": Hostile(tiny(), args=("--seed", "99999999999999999999"), usage="--seed"),
    "2-D recipe on a 3-D input": Hostile(tiny("init: {uniform: {}}}\n      odd",
                                              "init: {block_table: {pages: 8}}}\n      odd"),
                                         rule="bad-value"),
    "negative sparse window (recipe)": Hostile(_bundled("{window: WIN, compressed", "{window: -4, compressed"),
                                               rule="bad-value"),
    "negative sparse window (gather)": Hostile(_bundled("params: {window: WIN}", "params: {window: -4}"),
                                               rule="bad-value"),
    "--out-dir is a file": Hostile(tiny(), args=("--out-dir", "out"), setup=_out_is_a_file, usage="not a folder"),
    "--out-dir under /proc": Hostile(tiny(), args=("--out-dir", "/proc/kernel-builder-out"), usage="cannot write"),
    "--out-dir below a file": Hostile(tiny(), args=("--out-dir", "blocker/out"),
                                      setup=lambda d: (d / "blocker").write_text("x"), usage="Not a directory"),
    "--out-dir on a full disk": Hostile(tiny(), args=("--out-dir", "out"), usage="cannot write",
                                        limits={resource.RLIMIT_FSIZE: 100}),
    # checks that could be switched off
    "NaN tolerance": Hostile(tiny("    outputs:", "    tolerance: {rtol: .nan}\n    outputs:"), rule="bad-value"),
    "negative tolerance": Hostile(tiny("    outputs:", "    tolerance: {atol: -1.0}\n    outputs:"), rule="bad-value"),
    "NaN init value": Hostile(tiny("init: {uniform: {}}}\n      odd", "init: {uniform: {low: .nan}}}\n      odd"),
                              rule="bad-value"),
    "infinite init value": Hostile(tiny("init: {uniform: {}}}\n      odd", "init: {uniform: {high: .inf}}}\n      odd"),
                                   rule="bad-value"),
    "T: true": Hostile(tiny("T: 2, H: 4", "T: true, H: 4"), rule="wrong-type"),
    'T: "2"': Hostile(tiny("T: 2, H: 4", 'T: "2", H: 4'), rule="wrong-type"),
    "atol: true": Hostile(tiny("    outputs:", "    tolerance: {atol: true}\n    outputs:"), rule="wrong-type"),
    # low
    "--against as an option": Hostile(tiny(), args=("--graph", "--against=--output=F:x"), usage="--against"),
}


def _limits(extra: dict) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        for kind, value in extra.items():
            resource.setrlimit(kind, (value, value))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails instead of killing
    return apply


def run_case(case: Hostile, folder: Path) -> subprocess.CompletedProcess:
    if case.setup:
        case.setup(folder)
    if case.file:
        spec_path = case.file(folder)
    else:
        (folder / "kernels.yaml").write_text(case.spec)
        spec_path = "kernels.yaml"
    args = ["--file", spec_path, "--no-verify", *case.args]
    if "--out-dir" not in case.args and "--graph" not in case.args:
        args += ["--out-dir", "out"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, preexec_fn=_limits(case.limits))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once, two at a time (the machine has two cores)."""
    folders = {name: tmp_path_factory.mktemp("hostile") for name in CASES}
    lock = threading.Lock()
    results = {}

    def one(name):
        proc = run_case(CASES[name], folders[name])
        with lock:
            results[name] = proc

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, CASES))
    return {name: (results[name], folders[name]) for name in CASES}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_a_located_error(name, outcomes):
    case = CASES[name]
    proc, folder = outcomes[name]
    assert_no_traceback(proc)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if case.rule:
        rules = {r for _, r, _, _ in parse_report(proc.stderr)}
        assert case.rule in rules, proc.stderr
    else:
        assert "build: error: " in proc.stderr and case.usage in proc.stderr, proc.stderr
    written = {f for f in _files(folder) if f.startswith("out/") and not Path(folder, f).is_dir()}
    assert written <= {"out/.build.lock"}, written
    assert not (folder / "PWNED").exists() and not Path("PWNED").exists() and not (REPO / "PWNED").exists()
    assert not (folder.parent / "escaped").exists() and not Path("/tmp/abs").exists()
    assert not (folder / "F").exists()


def test_every_limit_has_its_own_rule():
    limits = {"too-deep", "too-many-nodes", "file-too-large", "not-a-file", "expr-too-complex", "tensor-too-large",
              "too-many-stages"}
    tested = {c.rule for c in CASES.values()}
    assert limits - {"file-too-large"} <= tested  # file-too-large: test_file_too_large below


def test_file_too_large(tmp_path, monkeypatch):
    import builder
    from builder import yamlsource

    monkeypatch.setattr(yamlsource, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text(TINY + "#" * 2000 + "\n")
    with pytest.raises(builder.SpecError) as info:
        builder.load(path)
    assert [d.rule for d in info.value.diagnostics] == ["file-too-large"]


def test_a_larger_byte_limit_admits_larger_sizes(tmp_path):
    """`--max-bytes` raises the limit that T = 10^8 hits (the tensors exist only on paper here)."""
    (tmp_path / "kernels.yaml").write_text(tiny("T: 2, H: 4", "T: 100000000, H: 4"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "builder", "--check", "--no-verify", *a], cwd=tmp_path,
                                    env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert run().returncode == 2
    proc = run("--max-bytes", "64G")
    assert proc.returncode == 0, proc.stderr


def test_killed_build_leftovers_are_removed(tmp_path):
    out = tmp_path / "out"
    staging = out / ".build-staging"
    staging.mkdir(parents=True)
    (staging / "0.tmp").write_text("half a file")
    (tmp_path / "kernels.yaml").write_text(TINY)
    proc = run_case(Hostile(TINY, args=("--out-dir", "out")), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not staging.exists()
    assert (out / "tiny" / "tiny_triton.py").is_file() and (out / "tiny" / "tiny_pypto.py").is_file()


def test_concurrent_builds_never_mix_versions(tmp_path):
    """Two builds of two YAML versions into one folder: each kernel's files come from one version."""
    for version in ("a", "b"):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "kernels.yaml").write_text(tiny("doc: one inverse rotation", f"doc: version {version}"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "builder", "--no-verify", "--out-dir", str(out)],
                                  cwd=tmp_path / v, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for v in ("a", "b")]
        assert all(p.wait(timeout=TIMEOUT_S) == 0 for p in procs)
        versions = {b: ("version a" in (out / "tiny" / f"tiny_{b}.py").read_text()) for b in ("triton", "pypto")}
        assert versions["triton"] == versions["pypto"]


# --------------------------------------------------------------------- names that meet generated ones

def _qkv_with_lowercase_dims() -> str:
    """The bundled forward-RoPE kernel with its head dim named `h` (the head index local of every tile
    body), an input named `extract_even` (a generated buffer) and one named `device` (a launcher local)."""
    import yaml

    data = yaml.safe_load(BUNDLED.read_text())
    kernel = data["kernels"]["dsv4_qkv_rope_forward"]
    small = {("h" if k == "H" else k): v for k, v in data["sizes"]["dsv4_small"].items()}
    kernel["sizes"] = {"small": small}
    for spec in kernel["inputs"].values():
        spec["shape"] = ["h" if d == "H" else d for d in spec["shape"]]
    for name in ("extract_even", "device"):
        kernel["inputs"][name] = {"shape": ["T", "h"], "dtype": "fp32", "init": {"zeros": {}}}
    return yaml.safe_dump({"version": 1, "kernels": {"dsv4_qkv_rope_forward": kernel}}, sort_keys=False)


@pytest.mark.parametrize("backend", ["triton", "pypto"])
def test_names_that_meet_generated_identifiers_still_verify(backend):
    import builder

    lib = builder.load("kernels.yaml", text=_qkv_with_lowercase_dims())
    kernel = lib["dsv4_qkv_rope_forward"]
    code = kernel.emit(backend)
    assert "\nh = " in code and "extract_even" in code
    report = kernel.verify(backend)
    assert report.ok and report.error is None, report.as_json()
    assert all(check.ok for check in report.stages)


def _make_read_only(folder: Path) -> Callable[[], None]:
    """Make `folder` unwritable (chmod, or `chattr +i` for root, who ignores modes); returns the undo."""
    folder.chmod(0o555)
    undo = lambda: folder.chmod(0o755)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = lambda: (subprocess.run(["chattr", "-i", str(folder)]), folder.chmod(0o755))
    try:
        (folder / "probe").touch()
    except OSError:
        return undo
    (folder / "probe").unlink()
    undo()
    pytest.skip("no way to make a folder read-only here")


def test_read_only_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    undo = _make_read_only(out)
    try:
        proc = run_case(Hostile(TINY, args=("--out-dir", "out")), tmp_path)
    finally:
        undo()
    assert_no_traceback(proc)
    assert proc.returncode == 2 and "build: error: cannot write to out" in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []
