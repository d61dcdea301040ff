"""The pytest plugin: `pytest --kernels FILE` collects one item per kernel, backend and size set, runs
them in parallel under pytest-xdist, and a failure names the first bad stage and its YAML line."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.spec_helpers import REPO, offset_of
from tests.test_verify_cache import TINY

# Breaks the forward rotation of kernel `second` only (its stage s1), as a faulty tile body would.
CONFTEST = textwrap.dedent("""
    from stages import rope_apply

    original = rope_apply.RopeApply.triton

    def broken(self, c):
        lines = original(self, c)
        if c.tg.spec.name == "second":
            lines = [line.replace("re * s + im * c", "im * c") for line in lines]
        return lines

    rope_apply.RopeApply.triton = broken
""")


def _pytest(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env_path = {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env_path})


def test_items_ids_and_shards(tmp_path):
    (tmp_path / "kernels.yaml").write_text(TINY)
    proc = _pytest(tmp_path, "--kernels", "kernels.yaml", "--collect-only", "-q")
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids == [f"kernels.yaml::{k}[{b}-small]" for k in ("first", "second") for b in ("triton", "pypto")]
    proc = _pytest(tmp_path, "--kernels", "kernels.yaml", "--collect-only", "-q", "--kernel-shard", "2/2",
                   "--kernel-backend", "pypto")
    assert [line for line in proc.stdout.splitlines() if "::" in line] == ["kernels.yaml::second[pypto-small]"]
    proc = _pytest(tmp_path, "--kernels", "kernels.yaml", "--kernel-shard", "3/2")
    assert proc.returncode != 0 and "1 <= I <= N" in proc.stderr


def test_parallel_run_and_a_failure_names_the_stage_and_line(tmp_path):
    (tmp_path / "kernels.yaml").write_text(TINY)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    proc = _pytest(tmp_path, "--kernels", "kernels.yaml", "-n", "2", "-rf")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 workers" in out and "1 failed, 3 passed" in out
    assert "FAILED kernels.yaml::second[triton-small]" in out
    line = TINY[:offset_of(TINY, "      s1:")].count("\n") + 1
    assert f"first bad stage: s1 (rope_apply) in loop block 1, kernels.yaml:{line}" in out
