"""Shared fixtures. The helpers behind them live in tests/spec_helpers.py (import them from there)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # `from tests import ...` under plain `pytest`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import spec_helpers  # noqa: E402


@pytest.fixture(scope="session")
def bundled_yaml() -> str:
    """The text of the bundled kernels.yaml, read once per session."""
    return spec_helpers.bundled_text()


@pytest.fixture(scope="session")
def lib():
    """The bundled kernel library, loaded once per session (modules testing another file override it)."""
    import builder

    return builder.load("kernels.yaml")


@pytest.fixture
def yaml_diagnostics():
    """`yaml_diagnostics(text, file="kernels.yaml", ops=None)` -> every diagnostic loading `text` produces."""
    return spec_helpers.diagnostics
