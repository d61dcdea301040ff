"""`build --target`: ahead-of-time compiles through Triton's own compiler on this CPU-only machine.

Resource extraction is checked on small hand-written kernels whose properties are known (a tf32 dot
runs on tensor cores, an fp32 "ieee" dot does not, a deep K tile pipelined three stages deep
overflows shared memory); the CLI, JSON and graph on the small `dsv4_qkv_rope_forward`; the model
on its own. Full-size kernels are compiled by the separate CI step (tests/test_targets_full.py).
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

import builder
from builder.aot import analyze, report
from builder.aot.check import findings, tile_params
from builder.aot.jobs import Job, block_source, run_jobs
from builder.aot.model import ACHIEVABLE, LAUNCH_S, occupancy, predict
from builder.aot.resources import Resources
from builder.emit.triton import emit_with_interfaces
from builder.sol import Cost, block_cost
from builder.targets import ARCHES, DEVICES, TARGETS, target
from stages import registry
from stages.grouped_matmul import GroupedMatmul
from tests.spec_helpers import REPO, position, run_build

SMALL = "dsv4_qkv_rope_forward"          # four quick blocks: the CLI tests compile it
MAIN = "dsv4_sparse_attn_decode"

HAND_WRITTEN = '''
import triton
import triton.language as tl

N = tl.constexpr(64)
DEEP_K = tl.constexpr(256)


@triton.jit
def tf32_dot(x_ptr, y_ptr):
    i = tl.arange(0, N)
    a = tl.load(x_ptr + i[:, None] * N + i[None, :])
    tl.store(y_ptr + i[:, None] * N + i[None, :], tl.dot(a, a, input_precision="tf32"))


@triton.jit
def ieee_dot(x_ptr, y_ptr):
    i = tl.arange(0, N)
    a = tl.load(x_ptr + i[:, None] * N + i[None, :])
    tl.store(y_ptr + i[:, None] * N + i[None, :], tl.dot(a, a, input_precision="ieee"))


@triton.jit
def deep_k_tile(x_ptr, y_ptr):
    i = tl.arange(0, N)
    k = tl.arange(0, DEEP_K)
    acc = tl.zeros([N, N], tl.float32)
    for k0 in range(0, 4096, DEEP_K):
        a = tl.load(x_ptr + i[:, None] * 4096 + k0 + k[None, :])
        b = tl.load(x_ptr + (k0 + k)[:, None] * N + i[None, :])
        acc += tl.dot(a, b, input_precision="tf32")
    tl.store(y_ptr + i[:, None] * N + i[None, :], acc)
'''
SIG = (("x_ptr", "*fp32"), ("y_ptr", "*fp32"))


@pytest.fixture(scope="module")
def lib():
    return builder.load(REPO / "kernels.yaml")


@pytest.fixture(scope="module")
def hand_written():
    """Resources of the hand-written kernels, compiled while this process has TRITON_INTERPRET=1 (as
    every verification here sets it): the workers must still compile, not interpret."""
    jobs = {(fn, cc): Job(fn, block_source(HAND_WRITTEN, fn), SIG, cc)
            for fn, cc in [("tf32_dot", 80), ("tf32_dot", 90), ("ieee_dot", 90), ("deep_k_tile", 90)]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        results = run_jobs(jobs.values(), workers=2)
    return {key: results[job.key] for key, job in jobs.items()}


# ----------------------------------------------------------------------------- resources, compiled

def test_a_tf32_dot_uses_tensor_cores_on_both_targets(hand_written):
    sm80, sm90 = hand_written["tf32_dot", 80], hand_written["tf32_dot", 90]
    assert (sm80.dots, sm80.tensor_core_dots, sm80.mma) == (1, 1, ("mma.sync",))
    assert (sm90.dots, sm90.tensor_core_dots, sm90.mma) == (1, 1, ("wgmma.mma_async",))
    for res in (sm80, sm90):
        assert res.error is None and 0 < res.registers <= 255 and res.warps == 4
        assert res.spill == 0 and res.shared > 0 and res.compile_s > 0


def test_an_ieee_fp32_dot_uses_no_tensor_core(hand_written):
    res = hand_written["ieee_dot", 90]
    assert (res.dots, res.tensor_core_dots, res.mma) == (1, 0, ())


def test_a_deep_pipelined_tile_exceeds_shared_memory(hand_written):
    res = hand_written["deep_k_tile", 90]
    assert res.error is None and res.tensor_core_dots == 1
    assert res.shared > ARCHES[90].smem_per_block          # 3 stages x (64 + 64) x 256 fp32
    assert occupancy(res, ARCHES[90]).programs_per_sm == 0


class DeepTileMatmul(GroupedMatmul):
    """grouped_matmul whose tile body is the deep, pipelined tf32 K loop above (test-only op)."""

    def triton(self, c):
        bk = c.const("BLOCK_K", c.p.block_k, "reduction depth per step")
        k_dim, n_dim, bn = c.dim("x", 1), c.dim("w", 1), c.tile("nb")
        return [f"r = tl.arange(0, {c.dim('y', 0)})",
                f"n = nb * {bn} + tl.arange(0, {bn})",
                f"k = tl.arange(0, {bk})",
                f"acc = tl.zeros([{c.dim('y', 0)}, {bn}], tl.float32)",
                f"for k0 in range(0, {k_dim}, {bk}):",
                f"    a = tl.load({c.src('x')} + r[:, None] * {k_dim} + k0 + k[None, :])",
                f"    w = tl.load({c.src('w')} + (k0 + k)[:, None] * {n_dim} + n[None, :])",
                '    acc += tl.dot(a, w, input_precision="tf32")',
                f"tl.store({c.dst('y')} + r[:, None] * {n_dim} + n[None, :], acc)"]


DEEP_YAML = """version: 1
kernels:
  deep:
    doc: one projection whose K tile, pipelined three stages deep, overflows shared memory
    sizes: {small: {T: 64, K: 4096, N: 64}}
    default_sizes: small
    inputs:
      x: {shape: [T, K], dtype: fp32, init: {uniform: {low: -1.0, high: 1.0}}}
      w: {shape: [1, N, K], dtype: fp32, init: {uniform: {low: -1.0, high: 1.0}}}
    stages:
      proj:
        op: grouped_matmul
        in: {x: x, w: w}
        params: {groups: 1, block_n: 64, block_k: 256, out_dtype: fp32}
    outputs:
      y: {from: proj.y}
"""


def test_a_block_over_the_shared_memory_limit_is_an_error_at_its_stage():
    ops = {**registry(), "grouped_matmul": DeepTileMatmul()}
    k = builder.load("deep.yaml", text=DEEP_YAML, ops=ops)["deep"]
    tg, sched = k.typed()
    fit = analyze([(tg, sched)], [target("cuda:sm_90")], workers=1)["deep", "cuda:sm_90"]
    errors = [d for d in fit.diagnostics if d.severity == "error"]
    assert not fit.ok and {d.rule for d in errors} == {"gpu-resources"}
    assert all((d.loc.file, d.loc.line, d.loc.col) == ("deep.yaml", *position(DEEP_YAML, "proj:")) for d in errors)
    d = next(d for d in errors if "shared memory" in d.message)
    assert f"{fit.blocks[0].resources.shared} B of shared memory" in d.message and "allows 232448 B" in d.message
    assert "proj.block_n (64)" in d.hint and "proj.block_k (256)" in d.hint
    assert not fit.blocks[0].prediction.fits
    assert any(line.rstrip().endswith("*") for line in report.text(fit))   # flagged in the table


def test_findings_name_every_property_of_the_done_criteria():
    """Spills are errors, CUDA-core dots and too few programs for a big block are warnings."""
    text = Path("kernels.yaml").read_text().replace(
        "in: {a: quant.q, a_scale: quant.dequant, w: wo_b, w_scale: wo_b_scale}",
        "in: {a: quant.q, a_scale: quant.dequant, w: wo_b, w_scale: wo_b_scale}\n        params: {block_n: 256}", 1)
    tg, sched = builder.load("kernels.yaml", text=text)[MAIN].typed("full")
    proj_b = next(b for b in sched.blocks if b.name == "proj_b")
    t = target("cuda:sm_90")
    cost = block_cost(proj_b)
    assert cost.bytes >= 8_000_000 and proj_b.programs < t.device.sms
    bad = Resources(registers=32, spill_stores=8, spill_loads=8, stack=8, shared=1024, warps=4, dots=1)
    found = {(d.rule, d.severity) for d in findings(proj_b, bad, cost, t)}
    assert found == {("gpu-resources", "error"), ("gpu-underuse", "warning")}
    messages = " ".join(d.message for d in findings(proj_b, bad, cost, t))
    assert "spills registers" in messages and "CUDA cores" in messages and f"{proj_b.programs} programs" in messages
    good = Resources(registers=32, shared=1024, warps=4, dots=1, tensor_core_dots=1)
    small = Cost(1_000_000, cost.flops)
    assert findings(proj_b, good, small, t) == []
    assert tile_params(proj_b) == ["proj_b.block_n (256)", "proj_b.block_k (32, default)"]  # a 16 kB int8 step


# ----------------------------------------------------------------------------- what gets compiled

def _top_level(tree: ast.Module) -> set[str]:
    names = set()
    for n in tree.body:
        if isinstance(n, ast.FunctionDef):
            names.add(n.name)
        elif isinstance(n, ast.Assign):
            names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return names


def _faces(tg, sched) -> dict:
    """Block index -> the block kernel's emitted interface (name, pointer arguments)."""
    return {f.index: f for f in emit_with_interfaces(tg, sched)[1]}


def kernel_name(b, faces) -> str:
    return faces[b.index].name


def test_each_block_is_compiled_from_a_self_contained_slice_of_the_module(lib):
    k = lib[MAIN]
    tg, sched = k.typed("full")
    module = k.emit("triton", "full")
    faces = _faces(tg, sched)
    everything = _top_level(ast.parse(module))
    for b in sched.blocks:
        src = block_source(module, kernel_name(b, faces))
        tree = ast.parse(src)
        here = _top_level(tree)
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert [f.name for f in functions if f.name.startswith("block")] == [kernel_name(b, faces)]
        for f in functions:   # every module-level name a kernel or helper reads is in the slice
            assert {n.id for n in ast.walk(f) if isinstance(n, ast.Name)} & everything <= here, (b.name, f.name)
        assert "torch" not in here and "run" not in here and "EXPECTED_INPUTS" not in here
    attn = block_source(module, kernel_name(sched.block_of("attn"), faces))
    assert "def round_bf16" in attn and "def round_half_even" not in attn and "PROJ_A_" not in attn


def test_variants_with_the_same_block_code_share_one_compile(lib):
    def keys(name):
        k = lib[name]
        tg, sched = k.typed("full")
        module, faces = emit_with_interfaces(tg, sched)
        return [Job(f.name, block_source(module, f.name), tuple(f.signature(tg).items()), 90).key for f in faces]

    assert keys(MAIN) == keys("dsv4_sparse_attn_decode_window_only") == keys("dsv4_sparse_attn_decode_ratio128")
    assert keys(MAIN) != keys("dsv4_sparse_attn_decode_split_half")


def test_signatures_follow_the_typed_graph(lib):
    k = lib[MAIN]
    tg, sched = k.typed()
    tree = ast.parse(k.emit("triton"))
    faces = _faces(tg, sched)
    signature = lambda b: faces[b.index].signature(tg)  # noqa: E731
    spell = {"bf16": "*bf16", "fp32": "*fp32", "int32": "*i32", "int8": "*i8"}
    for b in sched.blocks:
        sig = signature(b)
        fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == kernel_name(b, faces))
        assert list(sig) == [a.arg for a in fn.args.args]
    gather = signature(sched.block_of("gather"))
    assert gather["cmp_sparse_indices_ptr"] == "*i32" and gather["gather_kv_ptr"] == "*bf16"
    assert signature(sched.block_of("proj_b"))["wo_b_ptr"] == "*i8"
    assert all(v == spell[tg.types[ref].dtype.value] for b in sched.blocks
               for ref, v in zip(b.reads + b.writes + b.scratch, signature(b).values()))


class _Triton:
    @staticmethod
    def cdiv(a, b):
        return -(-a // b)


def test_programs_are_the_launchers_grid(lib):
    k = lib[MAIN]
    tg, sched = k.typed("full")
    tree = ast.parse(k.emit("triton", "full"))
    consts = {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and ast.unparse(n.value.func) == "tl.constexpr":
            consts[n.targets[0].id] = ast.literal_eval(n.value.args[0])
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    faces = _faces(tg, sched)
    grids = {ast.unparse(s.func.value): s.func.slice for s in ast.walk(run)
             if isinstance(s, ast.Call) and isinstance(s.func, ast.Subscript)}
    for b in sched.blocks:
        grid = eval(compile(ast.Expression(grids[kernel_name(b, faces)]), "<grid>", "eval"),
                    {**consts, "triton": _Triton})
        n = 1
        for g in grid:
            n *= g
        assert n == b.programs > 0


# ----------------------------------------------------------------------------- the model

def test_more_programs_are_never_slower_until_every_sm_is_busy():
    t = target("cuda:sm_90")
    res = Resources(registers=64, shared=16384, warps=8)
    cost = Cost(64_000_000, {"bf16": 1_000_000})
    times = [predict(cost, p, res, t).time_s for p in range(1, t.device.sms + 1)]
    assert all(later < earlier for earlier, later in zip(times, times[1:]))
    assert times[-1] < times[0] / 50
    full = cost.bytes / (t.device.bandwidth * ACHIEVABLE) + LAUNCH_S
    assert times[-1] == pytest.approx(full)           # every SM busy, latency hidden: bandwidth bound


def test_occupancy_follows_registers_shared_memory_and_warps():
    a = ARCHES[90]
    assert occupancy(Resources(registers=255, warps=4), a).programs_per_sm == 2      # 8192 registers per warp
    assert occupancy(Resources(registers=24, warps=4), a).limit == "warps"           # 16 x 4 = 64 warps
    low = occupancy(Resources(registers=32, warps=4, shared=100_000), a)
    assert (low.programs_per_sm, low.limit) == (2, "shared memory")
    assert occupancy(Resources(registers=32, warps=4, shared=a.smem_per_block + 1), a).programs_per_sm == 0


def test_dots_off_tensor_cores_are_modelled_at_the_cuda_core_rate():
    t = target("cuda:sm_90")
    cost = Cost(1000, {"bf16": 10**12})
    fast = predict(cost, 10_000, Resources(registers=32, warps=4, dots=1, tensor_core_dots=1), t)
    slow = predict(cost, 10_000, Resources(registers=32, warps=4, dots=1), t)
    assert slow.time_s / fast.time_s == pytest.approx(t.device.peaks["bf16"] / t.device.peaks["fp32"], rel=0.01)
    assert fast.bound == slow.bound == "compute"


def test_one_table_holds_every_device_fact():
    from builder import sol

    assert all(sol.DEVICES[k] is DEVICES[k] for k in sol.DEVICES)
    for name in TARGETS:
        t = target(name)
        assert t.device.sms and t.device.bandwidth and t.device.peaks["fp32"] and name == f"cuda:sm_{t.arch.cc}"
    assert ARCHES[90].smem_per_block == 232448 and ARCHES[80].smem_per_block == 166912


# ----------------------------------------------------------------------------- CLI and graph

def test_cli_json_reports_every_block(tmp_path):
    proc = run_build("--check", "--no-verify", "--kernel", SMALL, "--target", "cuda:sm_80", "--json", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    fit = doc["kernels"][0]["targets"]["cuda:sm_80"]
    sched = builder.load(REPO / "kernels.yaml")[SMALL].typed()[1]
    assert [b["name"] for b in fit["blocks"]] == [b.name for b in sched.blocks]
    for b, block in zip(fit["blocks"], sched.blocks):
        assert b["programs"] == block.programs and b["registers"] > 0 and b["warps"] == 4
        assert b["error"] is None and b["predicted_us"] > 0 and b["floor_us"] > 0
        assert {"spill_stores", "spill_loads", "shared", "tensor_core_dots", "compile_s", "programs_per_sm"} <= set(b)
    assert fit["predicted_us"] == pytest.approx(sum(b["predicted_us"] for b in fit["blocks"]), abs=0.01)
    assert fit["ok"] and fit["device"] == DEVICES["A100"].name and "not a measurement" in fit["model"]
    assert doc["targets_compile_wall_s"] > 0


def test_graph_clusters_show_what_each_block_compiles_to(tmp_path):
    out = {ext: tmp_path / f"g.{ext}" for ext in ("txt", "json", "dot", "mmd")}
    args = ["--graph", "--kernel", SMALL, "--target", "cuda:sm_90"] + [a for p in out.values() for a in ("-o", str(p))]
    proc = run_build(*args)
    assert proc.returncode == 0, proc.stderr
    sched = builder.load(REPO / "kernels.yaml")[SMALL].typed()[1]
    line = re.compile(r"sm_90: \d+ regs, (no spill|spill \S+ \S*B), smem \S+ \S*B, 4 warps x (\d+) programs, "
                      r"(no dot|tensor cores \d+/\d+)")
    model = re.compile(r"sm_90: model \d+\.\d\d\*? us beside the floor \d+\.\d\d us \(not measured\)")
    for ext in ("txt", "dot", "mmd"):
        text = out[ext].read_text()
        assert [int(m.group(2)) for m in line.finditer(text)] == [b.programs for b in sched.blocks], (ext, text)
        assert len(model.findall(text)) == len(sched.blocks), (ext, text)
    blocks = json.loads(out["json"].read_text())["kernels"][0]["blocks"]
    assert [b["targets"][0]["programs"] for b in blocks] == [b.programs for b in sched.blocks]
    assert all("compile_s" not in b["targets"][0] for b in blocks)        # the graph stays deterministic


def test_graph_without_target_shows_no_gpu_line(tmp_path):
    proc = run_build("--graph", "--kernel", SMALL)
    assert proc.returncode == 0 and "sm_90" not in proc.stdout and "regs" not in proc.stdout


def test_unknown_target_and_zero_jobs_are_usage_errors():
    proc = run_build("--check", "--no-verify", "--target", "cuda:sm_75")
    assert proc.returncode == 2 and "cuda:sm_75" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_build("--check", "--no-verify", "--jobs", "0")  # --jobs also fans out verification now
    assert proc.returncode == 2 and "--jobs needs a count of at least 1" in proc.stderr


# ----------------------------------------------------------------------------- bench/gpu.py

def test_gpu_bench_without_a_gpu_says_so_and_exits_0():
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--kernel", SMALL],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "nothing was timed" in proc.stdout
    assert not re.search(r"\d\s*us\b", proc.stdout)          # no time that was not measured


def test_gpu_bench_launches_every_block_with_the_launchers_grid(lib):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(REPO / "bench"))
    k = lib[MAIN]
    tg, sched = k.typed()
    calls = []

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args: calls.append((self.name, grid, len(args)))

    faces = _faces(tg, sched)
    module = type("M", (), {kernel_name(b, faces): Kernel(kernel_name(b, faces)) for b in sched.blocks})
    values = {ref: object() for ref in tg.types}
    for _, launch in gpu.block_launches(module, tg, sched, values):
        launch()
    assert [(n, g) for n, g, _ in calls] == [(kernel_name(b, faces), tuple(a.trips for a in b.domain))
                                            for b in sched.blocks]
    assert [n for _, _, n in calls] == [len(b.reads + b.writes + b.scratch) for b in sched.blocks]
    assert gpu.device_profile("NVIDIA H100 80GB HBM3") is DEVICES["H100"]
    assert gpu.device_profile("NVIDIA A100-SXM4-80GB") is DEVICES["A100"]
    assert gpu.device_profile("Some other GPU") is None
