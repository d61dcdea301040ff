"""What every backend's output shares: byte-identical across processes, header naming the YAML line,
and a file that `build` writes only when its content changes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from builder.cli import run as build

BACKENDS = ["triton", "pypto"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_emit_is_byte_identical_across_processes(backend):
    code = ("import builder, sys; sys.stdout.write(builder.load('kernels.yaml')"
            f"['dsv4_sparse_attn_decode'].emit('{backend}'))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].startswith("# @generated from kernels.yaml:")


def test_build_writes_each_backend_file_only_when_it_changes(tmp_path, capsys):
    out = tmp_path / "gen"
    args = ["--kernel", "dsv4_qkv_rope_forward", "--backend", "all", "--no-verify", "--out-dir", str(out)]
    assert build(args) == 0
    files = sorted(out.rglob("*.py"))
    assert [f.name for f in files] == ["dsv4_qkv_rope_forward_pypto.py", "dsv4_qkv_rope_forward_triton.py"]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    capsys.readouterr()
    assert build(args) == 0
    assert "unchanged" in capsys.readouterr().out
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
