"""An exception inside an op's code (infer, tiles, domain, tile bodies, golden) is an internal error
located at its stage: `FILE:LINE:COL: internal error in stage ID (op): ...`, traceback kept, exit 3.
Never a usage error (exit 2), whatever the exception's type."""
from __future__ import annotations

import pytest

import builder
from builder.stagefault import StageFault
from stages import registry
from tests.spec_helpers import position, run_python
from tests.test_hostile import TINY

STAGE_AT = position(TINY, "rot:")          # the stage's key in the YAML


def _broken(method: str, exc: BaseException) -> dict:
    """The registry with rope_apply's `method` raising `exc`."""
    real = registry()["rope_apply"]

    class Broken(type(real)):
        pass

    def boom(*args, **kwargs):
        raise exc

    setattr(Broken, method, boom)
    return {**registry(), "rope_apply": Broken()}


def _assert_located(fault: StageFault, exc: BaseException, during: str) -> None:
    assert fault.__cause__ is exc                      # the traceback of the op's own code is kept
    assert (fault.loc.file, fault.loc.line, fault.loc.col) == ("tiny.yaml", *STAGE_AT)
    assert fault.render().startswith(f"tiny.yaml:{STAGE_AT[0]}:{STAGE_AT[1]}: internal error in stage rot "
                                     f"(rope_apply): {type(exc).__name__}")
    assert during in fault.render()


@pytest.mark.parametrize("method", ["infer", "tiles"])
@pytest.mark.parametrize("exc", [KeyError("lanes"), ZeroDivisionError("division by zero"), IndexError("tuple"),
                                 TypeError("bad operand")], ids=lambda e: type(e).__name__)
def test_typing_faults_are_internal_errors_not_spec_errors(method, exc):
    with pytest.raises(StageFault) as info:
        builder.load("tiny.yaml", text=TINY, ops=_broken(method, exc))
    assert not isinstance(info.value, builder.SpecError)
    _assert_located(info.value, exc, "inferring")


def test_domain_fault():
    exc = KeyError("axis")
    with pytest.raises(StageFault) as info:
        builder.load("tiny.yaml", text=TINY, ops=_broken("domain", exc))
    _assert_located(info.value, exc, "iteration domain")


@pytest.mark.parametrize("backend, during", [("triton", "Triton tile body"), ("pypto", "PyPTO tile body")])
def test_tile_body_fault(backend, during):
    exc = AttributeError("ctx has no attribute `lanez`")
    kernel = builder.load("tiny.yaml", text=TINY, ops=_broken(backend, exc))["tiny"]   # loads: bodies run later
    with pytest.raises(StageFault) as info:
        kernel.emit(backend)
    _assert_located(info.value, exc, during)


def test_golden_fault():
    exc = RuntimeError("shape '[2, 4]' is invalid")
    kernel = builder.load("tiny.yaml", text=TINY, ops=_broken("golden", exc))["tiny"]
    with pytest.raises(StageFault) as info:
        kernel.verify("pypto")
    _assert_located(info.value, exc, "golden")


def test_the_op_rules_still_raise_spec_errors():
    """StageError and bad expressions from an op stay located usage errors (exit 2)."""
    with pytest.raises(builder.SpecError) as info:
        builder.load("tiny.yaml", text=TINY.replace("block_h: 4", "block_h: 3"))
    assert [d.rule for d in info.value.diagnostics] == ["bad-value"]


_CLI = """
import sys
from stages import registry

def boom(self, *args):
    raise {exc}

setattr(type(registry()["rope_apply"]), "infer", boom)
from builder.cli import main
sys.argv = ["build", "--file", {path!r}, "--check", "--no-verify"]
main()
"""


@pytest.mark.parametrize("exc", ["KeyError('lanes')", "ZeroDivisionError('division by zero')"])
def test_cli_exits_3_with_the_stage_location_and_the_traceback(tmp_path, exc):
    path = tmp_path / "kernels.yaml"
    path.write_text(TINY)
    proc = run_python(_CLI.format(exc=exc, path=str(path)))
    assert proc.returncode == 3, proc.stderr
    line, col = STAGE_AT
    name = exc.split("(")[0]
    assert f"{path}:{line}:{col}: internal error in stage rot (rope_apply): {name}" in proc.stderr, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "in boom" in proc.stderr  # the op's own frame
    assert "error[" not in proc.stderr                      # not reported as a problem of the spec
    assert proc.stdout == ""
