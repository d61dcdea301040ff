"""kernels.schema.json: generated from the models and the op registry, current, accepted by editors'
draft, accepting every bundled kernel as written and rejecting what the loader rejects for keys,
types and values."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from builder import schema
from builder.rules import CATALOGUE
from builder.stage_api import Op
from stages import registry
from tests import test_spec_rules as bad
from tests.spec_helpers import BUNDLED, REPO, run_build

COMMITTED = REPO / "kernels.schema.json"


@pytest.fixture(scope="module")
def validator():
    s = json.loads(COMMITTED.read_text())
    jsonschema.Draft7Validator.check_schema(s)
    return jsonschema.Draft7Validator(s)


def _errors(validator, text: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(text))]


def test_the_committed_schema_is_current():
    assert COMMITTED.read_text() == schema.text(), \
        "kernels.schema.json is stale: run `build --schema kernels.schema.json`"


def test_a_new_op_gets_its_stage_schema_from_the_registry():
    from pydantic import Field

    from builder.stage_api import Op, Params

    class ScaleParams(Params):
        factor: float = Field(2.0, description="multiplier")

    class Scale(Op):
        name, summary = "scale", "multiply by a constant"
        inputs, outputs = {"x": "[T, N] values"}, {"y": "[T, N] scaled values"}
        Params = ScaleParams

    s = schema.schema({**registry(), "scale": Scale()})
    assert {"$ref": "#/$defs/Stage_scale"} in s["$defs"]["Stage"]["oneOf"]
    stage = s["$defs"]["Stage_scale"]
    assert stage["properties"]["op"] == {"const": "scale", "description": "multiply by a constant"}
    assert s["$defs"]["ScaleParams"]["properties"]["factor"]["description"] == "multiplier"


def test_build_schema_prints_or_writes_it(tmp_path):
    proc = run_build("--schema")
    assert proc.returncode == 0 and proc.stdout == schema.text()
    proc = run_build("--schema", str(tmp_path / "s.json"))
    assert proc.returncode == 0 and (tmp_path / "s.json").read_text() == schema.text()
    assert proc.stdout == f"wrote {tmp_path / 's.json'}\n"


def test_kernels_yaml_names_the_schema_in_a_modeline():
    first = BUNDLED.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=kernels.schema.json"


def test_every_bundled_kernel_is_accepted_as_written(validator, bundled_yaml):
    data = yaml.safe_load(bundled_yaml)
    assert any("extends" in k for k in data["kernels"].values())        # patches, merge keys, sets by name
    assert _errors(validator, bundled_yaml) == []
    for name in data["kernels"]:                                        # and each kernel on its own
        one = {**data, "kernels": {n: k for n, k in data["kernels"].items()
                                   if n == name or n == data["kernels"][name].get("extends")}}
        assert list(validator.iter_errors(one)) == [], name


def test_stage_params_are_discriminated_by_op(validator):
    s = validator.schema
    stages = s["$defs"]["KernelSpec"]["properties"]["stages"]["additionalProperties"]
    assert stages == {"$ref": "#/$defs/Stage"}
    assert set(s["$defs"]["Stage"]["discriminator"]["mapping"]) == set(registry())
    for name, op in registry().items():
        one = s["$defs"][f"Stage_{name}"]
        assert one["properties"]["op"]["const"] == name
        assert set(one["properties"]["params"]["$ref"].rsplit("/", 1)[1:]) <= set(s["$defs"])
        params = s["$defs"][one["properties"]["params"]["$ref"].rsplit("/", 1)[1]]
        assert set(params["properties"]) == set(op.Params.model_fields)
        ports = one["properties"]["in"]
        if type(op).ports is Op.ports:  # fixed ports: the optional ones may be left out
            assert ports["required"] == [p for p in op.inputs if p not in op.optional_inputs]
            assert set(ports["properties"]) == set(op.inputs)
        else:  # ports named by the params (elementwise's expression): any names
            assert ports["additionalProperties"]["type"] == "string" and "properties" not in ports


def test_param_named_ports_and_optional_ports_pass_the_schema(validator, bundled_yaml):
    """An elementwise stage's ports are its expression's names; a gather may leave its optional ports out."""
    data = yaml.safe_load(bundled_yaml)
    stages = data["kernels"]["dsv4_pro_sparse_attn_decode"]["stages"]
    assert set(stages["nope"]["in"]) == {"x"} and "indices" not in stages["gather"]["in"]
    assert _errors(validator, bundled_yaml) == []
    stages["gather"]["in"]["window_rows"] = 3   # still typed
    assert any("gather" in e for e in _errors(validator, yaml.safe_dump(data)))


# Bad-spec tests whose mistake is in keys, types or values (what a schema can see); the others are about
# references, shapes, dims or YAML itself, which only the loader checks.
REJECTED = ["unknown-key/stage", "unknown-key/op-param", "unknown-key/kernel", "missing-key", "missing-key/port",
            "wrong-type", "wrong-type/merge-key", "unknown-op", "bad-value/range", "bad-value/enum",
            "bad-value/literal", "bad-name"]


@pytest.mark.parametrize("case", REJECTED)
def test_the_schema_rejects_the_bad_spec_tests_files(validator, case, bundled_yaml):
    text = bad.CASES[case].make(bundled_yaml).text
    assert _errors(validator, text), f"{case} passes the schema"


@pytest.mark.parametrize("rule", ["unknown-key", "missing-key", "wrong-type", "unknown-op", "bad-name"])
def test_the_schema_rejects_the_rule_examples(validator, rule):
    (example,) = [r.example for r in CATALOGUE if r.id == rule]
    assert _errors(validator, example), rule


def test_the_schema_accepts_what_references_cannot_be_checked_without_the_loader(validator, bundled_yaml):
    """A wrong reference is valid to the schema (the loader reports it): no false alarms in editors."""
    text = bad.CASES["unknown-ref"].make(bundled_yaml).text
    assert _errors(validator, text) == []


def test_a_patch_kernel_may_omit_what_it_inherits_but_not_misspell_it(validator, bundled_yaml):
    patch = bundled_yaml + "\n  variant:\n    extends: dsv4_sparse_attn_decode\n    stages:\n"
    assert _errors(validator, patch + "      attn: {params: {block_n: 32}}\n") == []
    assert _errors(validator, patch + "      attn: {params: {blok_n: 32}}\n")
    assert _errors(validator, patch.replace("    extends: dsv4_sparse_attn_decode\n", "    doc: no base\n")
                   + "      attn: {params: {block_n: 32}}\n")          # without extends: a whole kernel
