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


def test_untagged_strings_skip_the_resolver_with_the_same_data(monkeypatch):
    """An untagged scalar that no core resolver can type (`_TYPED_FIRST`) is taken as the string it is;
    with every scalar through the resolver and constructor instead, each file reads the same."""
    scalars = ["s0", "s0.even", "rope_apply", "odd", "on", "Off", "yes", "n", "true", "False", "null", "Null", "~",
               "1", "-1", "+1", "0x1F", "0o17", "1_000", "1.5", ".5", "1e3", ".inf", "-.Inf", ".nan", "a b", "é",
               "_x", "tiles of 8", "<x", "T=2", "[T, H]", "{a: 1}", '""', "''", '"1"', "'true'", '"s0"', "'~'",
               "!!str 1", "!!int 3"]
    text = "".join(f"k{i}: {s}\n" for i, s in enumerate(scalars)) + "".join(
        f"m{i}: {{{s}: 1}}\n" for i, s in enumerate(scalars) if not s.startswith(("[", "{", "!!")))
    bad = "a: 2001-12-14\nb: =\nc: !!float x\nd: s0\n"  # tags beyond the core schema's, a bad float
    for doc in (text, bad, bundled_text()):
        results = []
        for typed_first in (None, yamlsource._TYPED_FIRST):  # None: every scalar through the resolver
            monkeypatch.setattr(yamlsource, "_TYPED_FIRST", typed_first)
            try:
                src = yamlsource.parse(doc, "kernels.yaml")
                results.append((repr(src.data), src.values, src.keys))
            except SpecError as exc:
                results.append([d.render() for d in exc.diagnostics])
        assert results[0] == results[1]
