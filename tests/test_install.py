"""A light core install (pydantic, PyYAML, networkx) that validates, emits and renders; torch, triton
and numpy in the `verify` extra; CI's exact versions in .ci/constraints.txt, used by the README's
first command and by .ci/run. CI also proves the light install for real (.ci/light-install)."""
from __future__ import annotations

import json
import re
from importlib.metadata import requires

from packaging.requirements import Requirement

from tests.spec_helpers import REPO, assert_no_traceback, run_python

HEAVY = {"torch", "triton", "numpy"}


def _requirements() -> dict[str, list[Requirement]]:
    """The installed package's requirements by extra ("" for the core)."""
    out: dict[str, list[Requirement]] = {}
    for text in requires("kernel-builder") or []:
        req = Requirement(text)
        extra = re.search(r'extra == "([^"]+)"', str(req.marker)) if req.marker else None
        out.setdefault(extra.group(1) if extra else "", []).append(req)
    return out


def test_the_core_needs_no_torch_triton_or_numpy():
    reqs = _requirements()
    assert {r.name.lower() for r in reqs[""]} == {"pydantic", "pyyaml", "networkx"}
    verify = {r.name: r for r in reqs["verify"]}
    assert set(verify) == HEAVY | {"rich"}                # rich: the progress bar of verifications
    for r in verify.values():                            # ranges: a user keeps a torch of their own
        assert r.specifier and not any(s.operator == "==" for s in r.specifier), r
    assert any(r.name == "kernel-builder" and "verify" in r.extras for r in reqs["dev"])


def test_constraints_pin_the_heavy_packages_to_cpu_builds():
    pins = {}
    for line in (REPO / ".ci/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()           # pip's comments
        if line:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue                                  # a pin for another Python
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name] = spec.version
    assert HEAVY <= set(pins)
    assert pins["torch"] == "2.13.0+cpu" and pins["triton"] == "3.7.1"
    verify = {r.name: r for r in _requirements()["verify"]}
    assert all(r.specifier.contains(pins[name], prereleases=True) for name, r in verify.items())


def test_ci_runs_the_readme_commands():
    first, second = re.search(r"```sh\n(.*)\n(.*)\n```", (REPO / "README.md").read_text()).groups()
    install = first.split(" && ")
    assert install[0] == "python3 -m venv .venv" and install[-1] == ".venv/bin/build"
    assert "-c .ci/constraints.txt" in install[1]
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert install[0] in ci and install[1] in ci
    assert second in ci and second == ".venv/bin/python -m pytest -q"
    assert "bash .ci/light-install" in ci and ".venv/bin/ruff check ." in ci and ".venv/bin/mypy" in ci


_WITHOUT = """
import json, sys
for name in ("torch", "triton", "numpy"):
    sys.modules[name] = None          # as if not installed: importing fails, find_spec says None
from builder.cli import run
rc = {}
rc["check"] = run(["--check", "--kernel", "dsv4_qkv_rope_forward"])
rc["no-verify"] = run(["--check", "--no-verify"])
rc["graph"] = run(["--graph", "--kernel", "dsv4_sparse_attn_decode"])
rc["json"] = run(["--check", "--kernel", "dsv4_qkv_rope_forward", "--json"])
try:
    run(["--check", "--no-verify", "--target", "cuda:sm_90"])
except SystemExit as exc:
    rc["target"] = exc.code
print("@@" + json.dumps(rc))
"""


def test_without_the_verify_extra_build_emits_renders_and_says_how_to_verify():
    proc = run_python(_WITHOUT)
    assert_no_traceback(proc)
    out, rc = proc.stdout.rsplit("@@", 1)
    assert json.loads(rc) == {"check": 0, "no-verify": 0, "graph": 0, "json": 0, "target": 2}
    skipped = [line for line in proc.stderr.splitlines() if "verification skipped" in line]
    assert len(skipped) == 2                              # one line per run that wanted verification
    assert "torch, triton, numpy not installed" in skipped[0] and "kernel-builder[verify]" in skipped[0]
    assert "loop block 0" in out                          # the graph rendered
    report = json.loads(out[out.index("\n{\n") + 1:out.rindex("}") + 1])
    assert report["verification"] == "unavailable" and report["status"] == "ok"
    assert "--target compiles with triton, which is not installed" in proc.stderr


def test_pre_commit_runs_what_ci_runs():
    import yaml

    hooks = {h["id"]: h for repo in yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"]
             for h in repo["hooks"]}
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert hooks["ruff"]["entry"].startswith(".venv/bin/ruff check") and ".venv/bin/ruff check ." in ci
    assert hooks["mypy"]["entry"] == ".venv/bin/mypy" and ".venv/bin/mypy" in ci
    assert hooks["mypy"]["pass_filenames"] is False      # one run over [tool.mypy] files, as in CI
