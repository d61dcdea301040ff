"""pytest plugin (entry point `pytest11`): verify a kernel library as pytest items.

    pytest --kernels kernels.yaml                        # every kernel x backend, default size sets
    pytest --kernels kernels.yaml -n auto                # in parallel (pytest-xdist)
    pytest --kernels kernels.yaml --kernel-sizes full -k "split_half and triton"
    pytest --kernels kernels.yaml --kernel-sizes full --kernel-shard 2/4   # a CI matrix job

One item per (kernel, backend, size set), named `FILE::KERNEL[BACKEND-SIZES]`. An item runs
`Kernel.verify` (fresh: no cache); a failure prints the report, with the first bad stage and its YAML
line. Without other paths on the command line only the kernels are collected; with paths, both. The
plugin does nothing unless `--kernels` is given, and importing it imports neither torch nor triton.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("kernels", "kernel-builder: verify a kernel library")
    group.addoption("--kernels", metavar="FILE", help="collect one verification per kernel, backend and size set "
                                                       "of this YAML library")
    group.addoption("--kernel-sizes", metavar="NAMES", help="size sets to verify, comma-separated, or `all` "
                                                             "(default: each kernel's default_sizes)")
    group.addoption("--kernel-backend", metavar="NAMES", default="all",
                    help="backends, comma-separated (default: all)")
    group.addoption("--kernel-seed", type=int, default=0, metavar="N", help="fixture seed (default 0)")
    group.addoption("--kernel-shard", metavar="I/N", help="only the I-th of N equal shares of the items (1 <= I <= N), "
                                                          "for a CI job matrix")


def pytest_configure(config) -> None:
    path = config.getoption("kernels", None)
    if not path:
        return
    if not Path(path).is_file():
        raise pytest.UsageError(f"--kernels {path}: no such file")
    _shard(config.getoption("kernel_shard"))  # usage errors before anything is collected
    explicit = getattr(config, "args_source", None) == pytest.Config.ArgsSource.ARGS
    if not explicit:
        config.args[:] = [path]  # the kernels instead of the configured testpaths
    elif path not in config.args:
        config.args.append(path)


def pytest_collect_file(file_path: Path, parent):
    path = parent.config.getoption("kernels", None)
    if path and file_path.resolve() == Path(path).resolve():
        return KernelFile.from_parent(parent, path=file_path)
    return None


def _shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--kernel-shard {text}: write I/N, e.g. 2/4") from None
    if not 1 <= i <= n:
        raise pytest.UsageError(f"--kernel-shard {text}: needs 1 <= I <= N")
    return i - 1, n


class KernelFile(pytest.File):
    """A YAML kernel library: its items, in file order (the same in every xdist worker)."""

    def collect(self):
        import builder
        from builder.emit import BACKENDS

        config = self.config
        path = os.path.relpath(self.path, config.invocation_params.dir)  # as reports should name it
        path = str(self.path) if path.startswith("..") else path
        try:
            lib = builder.load(path)
        except builder.SpecError as exc:
            raise self.CollectError(exc.report(path)) from None
        backends = _names(config.getoption("kernel_backend"), BACKENDS, "--kernel-backend")
        wanted = config.getoption("kernel_sizes")
        shard, shards = _shard(config.getoption("kernel_shard"))
        index = 0
        for name in lib:
            kernel = lib[name]
            if wanted is None:
                sets = [kernel.spec.default_sizes]
            elif wanted == "all":
                sets = list(kernel.spec.sizes)
            else:
                sets = [s for s in wanted.split(",") if s in kernel.spec.sizes]
            for sizes in sets:
                for backend in backends:
                    if index % shards == shard:
                        yield KernelItem.from_parent(self, name=f"{name}[{backend}-{sizes}]", kernel=kernel,
                                                     backend=backend, sizes=sizes)
                    index += 1


def _names(text: str, known: tuple, option: str) -> list[str]:
    if text == "all":
        return list(known)
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names


class KernelMismatch(Exception):
    """The emitted code does not match the golden (the report says where)."""

    def __init__(self, report):
        super().__init__(report.status)
        self.report = report


class KernelItem(pytest.Item):
    def __init__(self, *, kernel, backend: str, sizes: str, **kwargs):
        super().__init__(**kwargs)
        self.kernel, self.backend, self.sizes = kernel, backend, sizes

    def runtest(self) -> None:
        report = self.kernel.verify(self.backend, self.sizes, self.config.getoption("kernel_seed"))
        self.user_properties.append(("verify_seconds", round(report.seconds, 3)))
        if not report.ok:
            raise KernelMismatch(report)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, KernelMismatch):
            from builder.verify import describe

            report = excinfo.value.report
            loc = self.kernel.spec.loc
            return "\n".join([f"{loc.file}:{loc.line}: kernel {self.kernel.name}, backend {self.backend}, "
                              f"sizes {self.sizes}: {report.status}"] + describe(report, loc.file))
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.kernel.spec.loc.line - 1, f"kernel {self.name}"
