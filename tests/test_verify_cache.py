"""The verification cache: a second `build` verifies nothing and says so; an edit to anything a result
depends on (a golden, a tile body, a tolerance, a fixture) reruns it; failures are never recorded;
entries are written whole even when builds race. Also the progress hooks and `build -j`."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

import builder
from builder import vcache
from builder.cli import run as build
from stages import rope_apply
from tests.spec_helpers import REPO

TINY = """version: 1
kernels:
  first:
    doc: two rotations
    sizes: {small: {T: 2, H: 16, R: 64}}
    inputs:
      e: {shape: [T, H, R], dtype: bf16, layout: interleave, init: {uniform: {}}}
      c: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: cos}}}
    stages:
      s0: {op: rope_apply, in: {even: e, odd: e, cos: c, sin: c}, params: {direction: inverse}}
      s1: {op: rope_apply, in: {even: s0.even, odd: s0.odd, cos: c, sin: c}, params: {direction: forward}}
    outputs:
      o: {from: s1.even}
      o2: {from: s1.odd}
  second:
    extends: first
    doc: the same, another kernel
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "kernels.yaml"
    path.write_text(TINY)
    return path


def _build(spec, cache, capsys, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = build(["--file", str(spec), "--check", "--backend", "triton", "--kernel", "first",
                  "--cache-dir", str(cache), *extra])
    return code, capsys.readouterr().out


def test_a_second_build_verifies_nothing_and_says_so(spec, tmp_path, capsys):
    cache = tmp_path / "cache"
    capsys.readouterr()
    args = ["--file", str(spec), "--check", "--cache-dir", str(cache)]
    assert build(args) == 0
    first = capsys.readouterr().out
    assert "verified 4, cached 0" in first and "(cached)" not in first
    assert build(args) == 0
    second = capsys.readouterr().out
    assert "nothing to verify: all 4 verifications are cached" in second
    assert second.count("verified (cached): ok") == 4
    assert build(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verifications"] == {"run": 0, "cached": 4, "cache": str(cache / "verify")}
    assert all(b["cached"] and b["status"] == "ok" for k in report["kernels"] for b in k["backends"].values())
    assert build(args + ["--no-cache"]) == 0
    assert "(cached)" not in capsys.readouterr().out


def _rotate_scaled(even, odd, cos, sin, *, direction, out_dtype):
    """An edited golden: the same rotation, written differently."""
    out = rope_apply.golden_rope_apply(even, odd, cos, sin, direction=direction, out_dtype=out_dtype)
    return {port: tensor * 1 for port, tensor in out.items()}


def _edit_golden(monkeypatch, spec):
    monkeypatch.setattr(rope_apply.RopeApply, "golden_fn", staticmethod(_rotate_scaled))


def _edit_tile_body(monkeypatch, spec):
    original = rope_apply.RopeApply.triton
    monkeypatch.setattr(rope_apply.RopeApply, "triton", lambda self, c: original(self, c) + ["# edited"])


def _edit_tolerance(monkeypatch, spec):
    spec.write_text(TINY.replace("      o: {from: s1.even}", "      o: {from: s1.even, tolerance: {rtol: 0.002}}"))


def _edit_fixture_args(monkeypatch, spec):
    spec.write_text(TINY.replace("init: {uniform: {}}", "init: {uniform: {low: -0.25}}"))


def _edit_fixture_function(monkeypatch, spec):
    from builder import inits

    original = inits.init_uniform

    def init_uniform(shape, seed, *, low, high, scale):
        return original(shape, seed, low=low, high=high, scale=scale)  # edited: a wrapper

    monkeypatch.setattr(inits, "init_uniform", init_uniform)


@pytest.mark.parametrize("edit", [_edit_golden, _edit_tile_body, _edit_tolerance, _edit_fixture_args,
                                  _edit_fixture_function], ids=lambda f: f.__name__[len("_edit_"):])
def test_an_edit_invalidates_the_entry(edit, spec, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    assert _build(spec, cache, capsys)[0] == 0
    code, out = _build(spec, cache, capsys)
    assert code == 0 and "verified (cached)" in out
    edit(monkeypatch, spec)
    code, out = _build(spec, cache, capsys)
    assert code == 0 and "verified 1, cached 0" in out, out
    code, out = _build(spec, cache, capsys)
    assert code == 0 and "verified (cached)" in out  # the edited version is recorded in turn


def test_a_failure_is_never_recorded(spec, tmp_path, capsys, monkeypatch):
    original = rope_apply.RopeApply.triton

    def broken(self, c):  # drops the sine term of the real part
        return [line.replace("re * c + im * s", "re * c").replace("re * c - im * s", "re * c")
                for line in original(self, c)]

    monkeypatch.setattr(rope_apply.RopeApply, "triton", broken)
    cache = tmp_path / "cache"
    for _ in range(2):
        code, out = _build(spec, cache, capsys)
        assert code == 1 and "first bad stage: s0" in out and "verified 1, cached 0" in out
    assert not list(cache.rglob("*.json"))


def test_key_covers_versions_device_and_machinery(spec, monkeypatch):
    k = builder.load(str(spec))["first"]
    parts = vcache.key_parts(k, "pypto", "small", 0, True)
    assert {"torch", "triton"} <= set(parts["versions"]) and "TRITON_INTERPRET" in parts["device"]
    assert {"builder.verify", "builder.plsim", "builder.runtime", "stages.rope_apply"} <= set(parts["modules"])
    base = vcache.key(k, "triton", "small", 0, True)
    assert base != vcache.key(k, "triton", "small", 1, True)             # the seed
    assert base != vcache.key(k, "pypto", "small", 0, True)              # the backend
    monkeypatch.setattr(vcache, "_version", lambda dist: "0.0")          # another torch or triton
    assert base != vcache.key(k, "triton", "small", 0, True)


def test_computing_a_key_imports_neither_torch_nor_triton(spec):
    code = textwrap.dedent(f"""
        import sys, builder
        from builder import vcache
        k = builder.load({str(spec)!r})["first"]
        vcache.key(k, "pypto", "small", 0, True)
        assert "torch" not in sys.modules and "triton" not in sys.modules, sorted(sys.modules)
    """)
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_entries_are_whole_when_builds_race(tmp_path):
    """Two processes record the same keys over and over while this one reads them: every read is
    either a miss or the whole entry, never part of one."""
    writer = textwrap.dedent(f"""
        from builder.vcache import Cache
        cache = Cache({str(tmp_path)!r})
        for i in range(300):
            cache.put("k" * 64 if i % 2 else "j" * 64, {{"status": "ok", "pad": "x" * 20000, "i": i}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer], cwd=REPO) for _ in range(2)]
    cache, seen = vcache.Cache(tmp_path), 0
    while any(p.poll() is None for p in procs):
        for key in ("k" * 64, "j" * 64):
            entry = cache.get(key)
            if entry is not None:
                assert entry["report"]["pad"] == "x" * 20000
                seen += 1
    assert all(p.wait() == 0 for p in procs)
    assert cache.get("k" * 64)["report"]["i"] % 2 == 1 and seen > 0
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_an_unwritable_cache_does_not_fail_the_build(spec, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    code, out = _build(spec, blocker, capsys)
    assert code == 0 and "verified 1, cached 0" in out
    with pytest.raises(ValueError):
        vcache.Cache(tmp_path).put("x" * 64, {"status": "mismatch"})


def test_on_block_reports_every_block_in_order(spec):
    k = builder.load(str(spec))["first"]
    for backend in ("triton", "pypto"):
        seen = []
        assert k.verify(backend, on_block=lambda i, name, seen=seen: seen.append((i, name))).ok
        assert seen == [(0, "s0"), (1, "s1")], backend


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_only(spec, tmp_path, capsys, monkeypatch):
    from builder import progress

    terminal = _Terminal()
    monkeypatch.setattr(progress.sys, "stderr", terminal)
    assert build(["--file", str(spec), "--check", "--backend", "pypto", "--kernel", "first", "--no-cache"]) == 0
    shown = terminal.getvalue()
    assert "first pypto (blocks)" in shown and "block 1 s1" in shown
    terminal.seek(0)
    terminal.truncate()
    assert build(["--file", str(spec), "--check", "--backend", "pypto", "--no-cache", "--json"]) == 0
    assert terminal.getvalue() == ""


def test_jobs_verify_in_worker_processes_in_kernel_order(spec, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "builder", "--file", str(spec), "--check", "-j", "2",
                           "--cache-dir", str(tmp_path / "cache")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    heads = [line.split(" ")[0] for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert heads[:2] == ["first", "second"]
    assert proc.stdout.count(": ok (") == 4 and "verified 4, cached 0" in proc.stdout
