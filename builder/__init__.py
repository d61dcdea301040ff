"""Declarative kernel builder: kernels.yaml -> stage graph -> loop blocks -> tile code -> golden check."""
from .diagnostics import Diagnostic, SpecError
from .library import Kernel, Library, load

__all__ = ["Diagnostic", "Kernel", "Library", "SpecError", "load"]
