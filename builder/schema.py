"""The JSON Schema of the spec language (`build --schema`, committed as kernels.schema.json).

Generated from the pydantic models of builder/spec.py, each op's ports and `Params` model (the op
registry) and the init recipes, so that an editor completes keys and flags misspelled ones: a
stage's `op:` selects the schema of its `in:` and `params:`. The schema describes the file as
written: a kernel with `extends:` is a patch (every key optional, a stage without `op:` takes the
params of any op), a kernel's size set may name a top-level one, and anchors and merge keys are
resolved before validation (as editors do). What only the loader checks (references, shapes, dims,
names that are keywords...) stays its job.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Mapping, Optional

from pydantic.json_schema import models_json_schema

from .inits import RECIPES
from .names import MAX_NAME
from .spec import FileSpec, KernelSpec
from .stage_api import Op

DRAFT = "http://json-schema.org/draft-07/schema#"   # the draft editors' YAML support knows best
NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": MAX_NAME}
_REF = "#/$defs/"


def schema(ops: Optional[Mapping[str, Any]] = None) -> dict:
    """The schema as a JSON-able dict; `ops` overrides the op registry."""
    if ops is None:
        from stages import registry

        ops = registry()
    recipes = list(RECIPES.items())
    models = [FileSpec, KernelSpec] + [model for _, model in recipes] + [op.Params for op in ops.values()]
    refs, top = models_json_schema([(m, "validation") for m in dict.fromkeys(models)], ref_template=_REF + "{model}")
    defs = top["$defs"]

    def name_of(model) -> str:
        return refs[(model, "validation")]["$ref"][len(_REF):]

    kernel = defs[name_of(KernelSpec)]
    for internal in ("name", "loc"):  # set by the loader, not written in a file
        del kernel["properties"][internal]
        kernel["required"].remove(internal)
    for key in ("dims", "sizes", "inputs", "stages", "outputs"):
        kernel["properties"][key]["propertyNames"] = NAME
    shared = defs[name_of(FileSpec)]["properties"]["sizes"]
    shared["propertyNames"] = NAME
    for size_sets in (shared, kernel["properties"]["sizes"]):
        size_sets["additionalProperties"]["propertyNames"] = NAME          # the free dims of a size set
    kernel["properties"]["sizes"]["additionalProperties"] = {"anyOf": [
        {"type": "string", "description": "the name of a size set under the top-level `sizes:`"},
        kernel["properties"]["sizes"]["additionalProperties"]]}

    tensor = defs["TensorSpec"]
    tensor["properties"]["init"] = {
        "description": tensor["properties"]["init"]["description"], "type": "object",
        "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        "properties": {name: {"anyOf": [{"$ref": _REF + name_of(model)}, {"type": "null"}]}  # `zeros:` is `{}`
                       for name, model in recipes}}

    stage = defs.pop("StageSpec")
    for op in ops.values():
        one = copy.deepcopy(stage)
        params = defs[name_of(op.Params)]
        one["title"] = f"stage running op {op.name}"
        one["properties"]["op"] = {"const": op.name, "description": op.summary}
        if type(op).ports is not Op.ports:  # its params name its ports (elementwise's expression): any names
            meaning = " ".join(op.inputs.values())
            one["properties"]["in"] = {"type": "object", "minProperties": 1,
                                       "additionalProperties": {"type": "string", "description": meaning}}
        else:
            required = [port for port in op.inputs if port not in op.optional_inputs]
            one["properties"]["in"] = {"type": "object", "additionalProperties": False, "required": required,
                                       "properties": {p: {"type": "string", "description": meaning}
                                                      for p, meaning in op.inputs.items()}}
        one["properties"]["params"] = {"$ref": _REF + name_of(op.Params)}
        if params.get("required"):
            one["required"] = one["required"] + ["params"]
        defs[f"Stage_{op.name}"] = one
    defs["Stage"] = {"oneOf": [{"$ref": f"{_REF}Stage_{op}"} for op in ops],
                     "discriminator": {"propertyName": "op",
                                       "mapping": {op: f"{_REF}Stage_{op}" for op in ops}}}
    kernel["properties"]["stages"]["additionalProperties"] = {"$ref": _REF + "Stage"}

    patch = _patch(defs, name_of(KernelSpec))
    defs[patch]["description"] = "a kernel with `extends:`: what it changes of the kernel it extends"
    defs[patch]["properties"]["stages"]["additionalProperties"] = {
        "anyOf": [{"$ref": _REF + _patch(defs, f"Stage_{op}")} for op in ops]}

    root = copy.deepcopy(defs.pop(name_of(FileSpec)))
    root["properties"]["kernels"] = {
        "type": "object", "propertyNames": NAME, "description": "kernels by name",
        "additionalProperties": {"if": {"required": ["extends"]}, "then": {"$ref": _REF + patch},
                                 "else": {"$ref": _REF + name_of(KernelSpec)}}}
    root.pop("title", None)
    out = {"$schema": DRAFT, "title": "kernel-builder spec (kernels.yaml)",
           "$comment": "generated by `build --schema` from builder/spec.py and stages/; do not edit", **root}
    out["$defs"] = {k: defs[k] for k in sorted(_reachable(out, defs))}
    return out


def _patch(defs: dict, name: str) -> str:
    """A copy of def `name` with nothing required, recursively (what `extends:` may override)."""
    patch = name + "Patch"
    if patch not in defs:
        defs[patch] = {}  # reserves the name while recursing
        defs[patch] = _loosen(defs[name], defs)
    return patch


def _loosen(node: Any, defs: dict) -> Any:
    if isinstance(node, list):
        return [_loosen(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _loosen(v, defs) for k, v in node.items() if k != "required"}
    ref = node.get("$ref", "")
    if ref.startswith(_REF) and defs[ref[len(_REF):]].get("type") == "object":
        out["$ref"] = _REF + _patch(defs, ref[len(_REF):])
    return out


def _reachable(node: Any, defs: dict, seen: Optional[set] = None) -> set:
    """Names of the defs `node` refers to, transitively."""
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith(_REF) and ref[len(_REF):] not in seen:
            seen.add(ref[len(_REF):])
            _reachable(defs[ref[len(_REF):]], defs, seen)
        for k, v in node.items():
            if k != "$defs":
                _reachable(v, defs, seen)
    elif isinstance(node, list):
        for v in node:
            _reachable(v, defs, seen)
    return seen


def text(ops: Optional[Mapping[str, Any]] = None) -> str:
    """The schema file's text (stable: committed and compared by tests)."""
    return json.dumps(schema(ops), indent=2) + "\n"
