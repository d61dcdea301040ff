"""The interpreter speed-ups in builder/triton_interpreter.py change no result."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("torch")

from builder.runtime import prepare_triton  # noqa: E402

prepare_triton()  # before triton is imported: it picks the interpreter at import time
pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
import torch  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

pytestmark = pytest.mark.skipif(interpreter._convert_float.__name__ != "_convert_float"
                                or not hasattr(interpreter._convert_float, "__wrapped__"),
                                reason="runs where the interpreter speed-ups are installed")


def _both(data, src, dst):
    fast = interpreter._convert_float
    return fast.__wrapped__(data, src, dst, None), fast(data, src, dst, None)


def test_bf16_to_fp32_matches_the_emulation_for_every_pattern():
    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    normal = patterns[(patterns & 0x7F80) != 0]  # the shift path (a subnormal sends the array to the emulation)
    for data in (normal, patterns, normal.reshape(2, -1), patterns[5:6].reshape(())):
        slow, fast = _both(data, tl.bfloat16, tl.float32)
        assert slow.dtype == fast.dtype and slow.shape == fast.shape
        np.testing.assert_array_equal(slow, fast)


def test_fp32_to_bf16_truncation_matches_the_emulation():
    rng = np.random.default_rng(0)
    specials = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x00800000, 0x7F7FFFFF]
    bits = np.concatenate([rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32),
                           np.array(specials, np.uint32)])
    normal = bits[(bits & 0x7F800000) != 0]
    for data in (normal, bits, np.array([0x00000001, 0x00400000], np.uint32)):
        slow, fast = _both(data.view(np.float32), tl.float32, tl.bfloat16)
        assert slow.dtype == fast.dtype and slow.shape == fast.shape
        np.testing.assert_array_equal(slow, fast)


@triton.jit
def _row_max_loop(x_ptr, out_ptr, R: tl.constexpr, C: tl.constexpr, STEPS: tl.constexpr):
    r = tl.arange(0, R)
    c = tl.arange(0, C)
    best = tl.full([R], -1.0e30, tl.float32)
    for step in range(STEPS):
        x = tl.load(x_ptr + (step * R + r)[:, None] * C + c[None, :]).to(tl.float32)
        best = tl.maximum(best, tl.max(x, axis=1) + tl.sum(x, axis=1) * 0.0)
    tl.store(out_ptr + tl.program_id(0) * R + r, best.to(tl.bfloat16))


def test_a_launch_scans_the_language_modules_a_bounded_number_of_times(monkeypatch):
    scans = []
    real = inspect.getmembers
    monkeypatch.setattr(inspect, "getmembers", lambda *a, **k: scans.append(1) or real(*a, **k))
    x = torch.randn(8 * 4, 16).to(torch.bfloat16)
    out = torch.empty(3 * 4, dtype=torch.bfloat16)
    _row_max_loop[(3,)](x, out, 4, 16, 8)
    # 3 programs x 8 steps x 3 device-function calls would rescan 72+ times without the cache
    assert len(scans) <= 16
    want = x.float().reshape(8, 4, 16).amax(dim=2).amax(dim=0).to(torch.bfloat16)
    torch.testing.assert_close(out.reshape(3, 4), want.expand(3, 4), rtol=0, atol=0)


def test_integer_overflow_shadows_are_off():
    # device_assert cannot fire in the interpreter, so the int64 shadow of every integer op was waste
    assert interpreter.interpreter_builder.options.sanitize_overflow is False


def test_an_int8_dot_through_blas_is_exact_and_wraps_like_int32():
    builder_cls = type(interpreter.interpreter_builder)
    blas, numpy_int = builder_cls.create_dot, builder_cls.create_dot.__wrapped__
    rng = np.random.default_rng(1)
    a = interpreter.TensorHandle(rng.integers(-128, 128, (16, 4096), dtype=np.int8), tl.int8)
    b = interpreter.TensorHandle(rng.integers(-128, 128, (4096, 16), dtype=np.int8), tl.int8)
    near_max = np.full((16, 16), 2**31 - 2**24, np.int32)  # the sum wraps past int32's top, as on a GPU
    for start in (np.zeros((16, 16), np.int32), near_max):
        d = interpreter.TensorHandle(start, tl.int32)
        want = numpy_int(interpreter.interpreter_builder, a, b, d, None, 0).data
        got = blas(interpreter.interpreter_builder, a, b, d, None, 0).data
        assert got.dtype == np.int32 and np.array_equal(got, want)



@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int8, torch.int32])
def test_the_numpy_gather_loads_what_the_native_load_loads(dtype):
    gather = interpreter._interpreter
    native = gather._native
    data = (torch.arange(4096) % 251 - 125).to(dtype)
    rng = np.random.default_rng(2)
    size = data.element_size()
    rows = rng.integers(0, 4096 // 64, 16)
    offsets = rows[:, None] * 64 + np.arange(64)[None, :]
    ptrs = (data.data_ptr() + offsets * size).astype(np.uint64)
    np_dtype = data.numpy().dtype if dtype is not torch.bfloat16 else np.dtype(np.uint16)
    other = np.full(ptrs.shape, 7, dtype=np_dtype)
    masks = [np.ones(ptrs.shape, bool), rng.random(ptrs.shape) < 0.5, np.zeros(ptrs.shape, bool)]
    for mask in masks:
        garbage = np.where(mask, ptrs, np.uint64(8))  # masked-off lanes may hold any address
        want = native.load(garbage, mask, other, np_dtype)
        got = gather.load(garbage, mask, other, np_dtype)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    if size > 1:  # an unaligned address is left to the native loop
        odd = ptrs + np.uint64(1)
        assert np.array_equal(gather.load(odd, masks[0], other, np_dtype), native.load(odd, masks[0], other, np_dtype))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int8, np.int64])
def test_the_numpy_scatter_stores_what_the_native_store_stores(dtype):
    scatter = interpreter._interpreter
    native = scatter._native
    rng = np.random.default_rng(3)
    for trial in range(6):
        mine, theirs = np.zeros(4096, dtype), np.zeros(4096, dtype)
        lanes = np.arange(1024) if trial % 3 == 0 else rng.permutation(4096)[:1024]
        if trial == 5:  # lanes writing one address: the last one's value
            lanes = np.repeat(np.arange(512), 2)
        lanes = lanes.reshape(16, 64)
        mask = np.ones(lanes.shape, bool) if trial % 2 else rng.random(lanes.shape) < 0.6
        value = rng.integers(1, 100, lanes.shape).astype(dtype)
        itemsize = np.dtype(dtype).itemsize
        scatter.store((mine.ctypes.data + lanes * itemsize).astype(np.uint64), value, mask)
        native.store((theirs.ctypes.data + lanes * itemsize).astype(np.uint64), value, mask)
        assert np.array_equal(mine, theirs), trial


def test_remembered_block_shapes_still_validate_and_keep_their_fields():
    from triton.language import core

    first = core.block_type(tl.float32, [16, 32])
    again = core.block_type(tl.float32, [16, 32])
    assert (again.shape, again.numel, again.name, again.element_ty) == ((16, 32), 512, first.name, tl.float32)
    assert core.block_type(tl.int8, [16, 32]).element_ty == tl.int8  # keyed by element type too
    with pytest.raises(ValueError, match="power of 2"):
        core.block_type(tl.float32, [16, 24])
    with pytest.raises(ValueError, match="power of 2"):
        core.block_type(tl.float32, [16, 24])  # a failure is never remembered as a success


def test_numpy_dtypes_are_remembered_and_still_right():
    from builder import triton_interpreter

    for tt, np_dtype in ((tl.float32, np.float32), (tl.bfloat16, np.uint16), (tl.int8, np.int8),
                         (tl.pointer_type(tl.float32), np.uint64)):
        assert interpreter._get_np_dtype(tt) == np.dtype(np_dtype)
    calls = []
    remembered = triton_interpreter._remembered(lambda arg: calls.append(arg) or len(calls))
    assert [remembered("a"), remembered("a"), remembered("b")] == [1, 1, 2]
    assert remembered([1]) == 3 and remembered([1]) == 4  # unhashable: computed every time


def test_shape_equality_answers_as_tritons_own():
    from triton.language import core

    fast = core.tuple.__eq__
    assert fast is not getattr(fast, "__wrapped__", fast), "the fast path is installed"
    shapes = [core.tuple([16, 32]), core.tuple([16, 32]), core.tuple([32, 16]), core.tuple([16]),
              core.tuple([core.constexpr(16), 32])]
    others = shapes + [[16, 32], [16, 31], [], [core.constexpr(16), core.constexpr(32)], (16, 32)]
    for a in shapes:
        for b in others:
            assert bool(fast(a, b)) == bool(fast.__wrapped__(a, b)), (a, b)
    tensors: dict = {core.tuple([16, 32]): 1}  # hashing is unchanged: equal shapes still meet in a dict
    assert tensors.get(core.tuple([16, 32])) == 1
