"""The loader reads libyaml's C event stream when PyYAML has it, else the pure-Python parser's: both
give the same data and the same location of every key and value, and the same located errors."""
from __future__ import annotations

import pytest
import yaml

from builder import yamlsource
from builder.diagnostics import SpecError
from tests.spec_helpers import bundled_text


def _both(monkeypatch, text: str):
    results = []
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        monkeypatch.setattr(yamlsource, "_LOADER", loader)
        try:
            src = yamlsource.parse(text, "kernels.yaml")
            results.append((src.data, src.values, src.keys))
        except SpecError as exc:
            results.append([d.render() for d in exc.diagnostics])
    return results


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml")
def test_c_and_python_parsers_agree(monkeypatch):
    c, python = _both(monkeypatch, bundled_text())
    assert c == python and len(c[1]) > 300
    bad = "version: 1\nkernels:\n  k: {a: 1, a: 2}\n  j: !!python/name:os.system x\n  l: [1, *nope]\n"
    c, python = _both(monkeypatch, bad)
    assert c == python and any("duplicate-key" in line for line in c)
