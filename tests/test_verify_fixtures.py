"""One kernel verified on several backends makes its inputs and golden once, and each backend's code
runs on its own copies of the inputs."""
from __future__ import annotations

import builder
import builder.runtime


def test_backends_share_inputs_and_golden_but_run_on_copies(monkeypatch):
    kernel = builder.load("kernels.yaml")["dsv4_qkv_rope_forward"]
    made, seen = [], []
    make_inputs = type(kernel).make_inputs
    run_emitted = builder.runtime.run_emitted

    def counted(self, *args, **kwargs):
        made.append(self.name)
        return make_inputs(self, *args, **kwargs)

    def recording(code, backend, tg, inputs, *args):
        seen.append(inputs)
        return run_emitted(code, backend, tg, inputs, *args)

    monkeypatch.setattr(type(kernel), "make_inputs", counted)
    monkeypatch.setattr(builder.runtime, "run_emitted", recording)
    fixtures: dict = {}
    reports = [kernel.verify(backend, fixtures=fixtures) for backend in ("triton", "pypto")]
    assert all(r.ok for r in reports) and made == [kernel.name]
    (stored, _golden), = fixtures.values()
    assert len(seen) == 2 and seen[0] is not seen[1]
    for inputs in seen:
        assert inputs.keys() == stored.keys()
        assert all(inputs[n] is not stored[n] and inputs[n].equal(stored[n]) for n in stored)
    kernel.verify("triton", seed=1, fixtures=fixtures)
    assert len(fixtures) == 1 and made == [kernel.name] * 2  # another seed: made again, the old set let go
