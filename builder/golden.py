"""The kernel golden: every stage's torch golden run in the schedule's topological order."""
from __future__ import annotations

from typing import Mapping

from .graph import TypedGraph
from .stagefault import in_stage


def stage_types(stage) -> dict:
    return {**stage.in_types, **stage.out_types}


def stage_inputs(st, values: Mapping) -> dict:
    """The tensors a stage's golden takes, by port: `values[ref]`, read with its `reshape:` shape."""
    return {port: values[ref].reshape(st.in_types[port].numel_shape) if port in st.spec.reshape else values[ref]
            for port, ref in st.inputs.items()}


def run_stages(tg: TypedGraph, stages, values: dict) -> dict:
    """Run `stages` on `values` (tensor reference -> tensor), adding each output as `stage.port`."""
    for st in stages:
        ins = stage_inputs(st, values)
        with in_stage(st.id, st.op.name, st.loc, "running its golden"):
            outs = st.op.golden(ins, st.params, tg.dims, stage_types(st))
        for port, tensor in outs.items():
            values[st.ref(port)] = tensor
    return values


def run_golden(tg: TypedGraph, inputs: Mapping, intermediates: bool = False) -> dict:
    """Kernel outputs by name; with `intermediates`, also every stage output keyed `stage.port`."""
    values = run_stages(tg, tg.stages.values(), dict(inputs))
    result = {name: values[ref] for name, ref in tg.outputs.items()}
    if intermediates:
        result.update({ref: v for ref, v in values.items() if ref not in tg.inputs})
    return result


def run_given(tg: TypedGraph, inputs: Mapping, given: Mapping, ref: str):
    """The golden of tensor `ref` recomputed from `given` (tensor reference -> the kernel's own value)
    instead of the golden's values of those tensors: only the stages between them and `ref` run."""
    needed, todo = set(), [ref]
    while todo:
        r = todo.pop()
        sid = tg.producer(r)
        if r in given or sid is None or sid in needed:
            continue
        needed.add(sid)
        todo += list(tg.stages[sid].inputs.values())
    values = run_stages(tg, [st for sid, st in tg.stages.items() if sid in needed], {**inputs, **given})
    return values[ref]
