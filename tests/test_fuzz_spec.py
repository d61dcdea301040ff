"""Property: any mutation of the bundled kernels.yaml (keys, values, names, nesting, tags, numbers) gives
either located diagnostics or kernels that emit on every backend; never another exception, a hang or
a file outside the output folder."""
from __future__ import annotations

import signal
from contextlib import contextmanager

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import builder
from builder.diagnostics import RULES
from builder.emit import BACKENDS
from builder.files import write_set
from tests.spec_helpers import BUNDLED

BASE = yaml.safe_load(BUNDLED.read_text())
EXAMPLE_SECONDS = 20


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


PATHS = [p for p in _paths(BASE) if p]
DOCS = [p for p in PATHS if p[-1] == "doc"]
TOLERANCES = [p for p in PATHS if p[-1] in ("rtol", "atol")]

names = st.one_of(st.sampled_from(["x", "T", "h", "None", "class", "a-b", "x y", "locals", "extract_even", "torch",
                                   "../../up", "/abs", "k\nimport os", "__m0__", "golden_x", "run", "é", ""]),
                  st.text(max_size=12))
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, -1, 2**31, 10**400]),
                    st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(numbers, names, st.booleans(), st.none(),
                    st.sampled_from(["10**10**10", "min()", "(-8)**0.5", "D // 0", "T * H", "__import__('os')"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(names, inner, max_size=3)), max_leaves=8)
TAGS = ["!!python/name:os.system ", "!foo ", "!!int ", "!!binary ", "!!float ", "!!str ", "!!timestamp "]


def _get(data, path):
    for p in path:
        data = data[p]
    return data


@st.composite
def mutated(draw) -> str:
    data = yaml.safe_load(BUNDLED.read_text())
    # Free text and tolerances: edits that keep the file valid, so that emission is exercised too.
    for _ in range(draw(st.integers(0, 2))):
        _get(data, draw(st.sampled_from(DOCS))[:-1])["doc"] = draw(st.text(max_size=40))
    if draw(st.booleans()):
        path = draw(st.sampled_from(TOLERANCES))
        _get(data, path[:-1])[path[-1]] = draw(st.floats(0, 1))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(PATHS))
        try:
            parent = _get(data, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed it
        key = path[-1]
        if isinstance(parent, dict) and key not in parent or isinstance(parent, list) and key >= len(parent):
            continue
        action = draw(st.sampled_from(["replace", "rename", "delete", "nest", "number"]))
        if action == "replace":
            parent[key] = draw(values)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(names)] = parent.pop(key)
        elif action == "delete":
            del parent[key]
        elif action == "nest":
            value = parent[key]
            for _ in range(draw(st.integers(1, 40))):
                value = [value] if draw(st.booleans()) else {"k": value}
            parent[key] = value
        elif action == "number":
            parent[key] = draw(numbers)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=200)
    if draw(st.integers(0, 3)) == 0:  # a tag in front of some value
        lines = text.split("\n")
        i = draw(st.integers(0, len(lines) - 1))
        if ": " in lines[i]:
            head, _, tail = lines[i].partition(": ")
            lines[i] = f"{head}: {draw(st.sampled_from(TAGS))}{tail}"
        text = "\n".join(lines)
    return text


@contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"an example took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=mutated())
def test_mutated_spec_is_located_error_or_clean_build(text, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz")
    with time_limit(EXAMPLE_SECONDS):
        try:
            lib = builder.load("kernels.yaml", text=text)
        except builder.SpecError as exc:
            assert exc.diagnostics
            for d in exc.diagnostics:
                assert d.rule in RULES and d.loc.line >= 1 and d.loc.col >= 1 and d.message and d.hint
                assert "\n" not in d.message
            return
        files = {}
        for name in lib:
            for backend in BACKENDS:
                code = lib[name].emit(backend)
                compile(code, f"{name}_{backend}.py", "exec")  # generated code is valid Python
                files[f"{name}/{name}_{backend}.py"] = code
        write_set(out, files)
    written = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert {str(p) for p in written} <= set(files) | {".build.lock"}


def test_the_mutations_reach_both_outcomes():
    """The strategy is not vacuous: it yields both invalid files and valid ones."""
    outcomes = set()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(text=mutated())
    def probe(text):
        try:
            builder.load("kernels.yaml", text=text)
            outcomes.add("valid")
        except builder.SpecError:
            outcomes.add("invalid")

    probe()
    assert {"valid", "invalid"} <= outcomes
