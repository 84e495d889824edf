"""The event engine's parts on their own: ``python -m pytest tests/test_events_kernels.py -q``.

The quantizer kernels against the recurrences of :mod:`sigmadelta.core.functional` (the same float operations in the same
order, so levels and messages are compared exactly), the index maps against torch's own convolution and pooling,
and the numba setup (cache directory, threading layer).
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sigmadelta.core.functional import LEVEL_FUNCTIONS
from sigmadelta.runtime.events import _kquant as kq
from sigmadelta.runtime.events._maps import conv_taps, pool_windows, reach_of

SCHEMES = {"sigma-delta": (kq.ROUND, 0.0), "hysteresis": (kq.HYSTERESIS, 0.3), "threshold": (kq.THRESHOLD, 0.2)}


def _csr(rows, channels, dtype):
    return (np.zeros(rows + 1, np.int32), np.zeros(rows + 2, np.int32), np.zeros(rows * channels + 1, np.int32),
            np.zeros(rows * channels + 1, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantize_rows_is_the_level_recurrence(scheme, dtype):
    """Two steps of one quantizer on visited rows: levels as ``functional``'s, messages ``(L_t − L_{t−1}) / k`` where
    nonzero, in CSR (rows in visiting order), unvisited rows untouched; ReLU applied on the fly."""
    code, param = SCHEMES[scheme]
    rng = np.random.default_rng(0)
    R, C = 12, 5
    k = np.linspace(0.5, 3.0, C).astype(dtype).reshape(1, C)
    lo, hi = np.zeros(C, dtype), np.full(C, np.inf, dtype)
    thr = dtype(param + 0.5 if scheme == "hysteresis" else param)
    level = np.zeros((R, C), dtype)
    expected = torch.zeros(R, C, dtype=torch.from_numpy(level).dtype)
    kernel = kq.QUANTIZE_ROWS[kq.CLAMP, code]
    for step in range(2):
        x = (rng.standard_normal((R, C)) * 2).astype(dtype)
        rows = np.array([7, 2, 9, 4], np.int32)  # a visiting order, not sorted
        pix, ptr, ch, val = _csr(R, C, dtype)
        n_pix, nnz = kernel(rows, len(rows), x, 0, lo, hi, k, thr, level, R * C, pix, ptr, ch, val,
                            np.zeros(C, dtype))
        v = torch.from_numpy(np.maximum(x[rows], 0) * k)  # relu, then k·x in the model's dtype
        new = LEVEL_FUNCTIONS[scheme](v, expected[rows], param)
        s = (new - expected[rows]) / torch.from_numpy(k)
        expected[rows] = new
        assert torch.equal(torch.from_numpy(level), expected)
        active = [a for a in range(len(rows)) if (s[a] != 0).any()]
        assert n_pix == len(active) and nnz == int((s != 0).sum())
        assert pix[:n_pix].tolist() == [int(rows[a]) for a in active]
        for a, row in enumerate(active):
            cols = ch[ptr[a]:ptr[a + 1]]
            assert cols.tolist() == (s[row] != 0).nonzero().squeeze(1).tolist()
            assert torch.equal(torch.from_numpy(val[ptr[a]:ptr[a + 1]]), s[row, cols])


def test_quantize_rows_stops_listing_at_its_capacity_but_keeps_every_level():
    R, C = 6, 4
    x = np.full((R, C), 2.0, np.float32)
    level = np.zeros((R, C), np.float32)
    pix, ptr, ch, val = _csr(R, C, np.float32)
    kernel = kq.QUANTIZE_ROWS[kq.CLAMP, kq.ROUND]
    n_pix, nnz = kernel(np.arange(R, dtype=np.int32), R, x, 0, np.full(C, -np.inf, np.float32),
                        np.full(C, np.inf, np.float32), np.ones((1, C), np.float32), np.float32(0), level, 9, pix, ptr,
                        ch, val, np.zeros(C, np.float32))
    assert nnz == R * C > 9 and n_pix == 2  # two whole rows fit in 9 messages
    assert (level == 2.0).all()


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantize_planes_equals_quantize_rows(scheme):
    """The image quantizer (NCHW planes, blocks of pixels) emits what the row kernel emits on the same values."""
    code, param = SCHEMES[scheme]
    rng = np.random.default_rng(1)
    B, C, P = 2, 3, 150  # more pixels than one block
    frame = (rng.standard_normal((B, C, P)) * 3).astype(np.float32)
    frame[:, :, 40:100] = 0.0  # a quiet block
    k = np.array([1.0, 2.0, 0.5], np.float32)
    thr = np.float32(param + 0.5 if scheme == "hysteresis" else param)
    planes = np.zeros((B, C, P), np.float32)
    a = _csr(B * P, C, np.float32)
    got = kq.QUANTIZE_PLANES[code](frame, k, thr, planes, B * P * C, *a, np.zeros((C, kq.BLOCK), np.float32),
                                   np.zeros(kq.BLOCK, np.uint8))
    rows = np.ascontiguousarray(frame.transpose(0, 2, 1).reshape(B * P, C))
    level = np.zeros((B * P, C), np.float32)
    b = _csr(B * P, C, np.float32)
    want = kq.QUANTIZE_ROWS[kq.CLAMP, code](np.arange(B * P, dtype=np.int32), B * P, rows, 0,
                                            np.full(C, -np.inf, np.float32), np.full(C, np.inf, np.float32),
                                            k.reshape(1, C), thr, level, B * P * C, *b, np.zeros(C, np.float32))
    assert got == want
    n_pix, nnz = got
    assert np.array_equal(planes.transpose(0, 2, 1).reshape(B * P, C), level)
    for x, y in zip(a, b):
        assert np.array_equal(x[:nnz], y[:nnz])


@pytest.mark.parametrize("kernel, stride, padding, dilation, before", [
    ((3, 3), (1, 1), (1, 1), (1, 1), (0, 0)), ((3, 3), (2, 2), (0, 0), (1, 1), (0, 0)),
    ((3, 3), (2, 2), (2, 2), (2, 2), (0, 0)), ((1, 1), (1, 1), (0, 0), (1, 1), (0, 0)),
    ((5, 3), (3, 1), (1, 0), (1, 2), (0, 0)), ((3, 3), (2, 2), (0, 0), (1, 1), (0, 1)),  # a folded pad
])
def test_conv_taps_are_the_convolutions_reach(kernel, stride, padding, dilation, before):
    """Each input pixel's taps ``(κ, o)`` are exactly the outputs that a one-hot input moves, through the weight
    entry κ (checked with a one-hot kernel)."""
    size = (7, 9)
    pad = (before[1], 0, before[0], 0)  # F.pad order: last dimension first
    out_size = F.conv2d(F.pad(torch.zeros(1, 1, *size), pad), torch.zeros(1, 1, *kernel), stride=stride,
                        padding=padding, dilation=dilation).shape[2:]
    ntap, tap_k, tap_o = conv_taps(size, out_size, kernel, stride,
                                   tuple(p + b for p, b in zip(padding, before)), dilation)
    for p in range(math.prod(size)):
        x = torch.zeros(1, 1, *size, dtype=torch.float64)
        x.view(-1)[p] = 1
        found = set()
        for kappa in range(math.prod(kernel)):
            w = torch.zeros(1, 1, *kernel, dtype=torch.float64)
            w.view(-1)[kappa] = 1
            y = F.conv2d(F.pad(x, pad), w, stride=stride, padding=padding, dilation=dilation).reshape(-1)
            found |= {(kappa, int(o)) for o in y.nonzero().squeeze(1)}
        assert set(zip(tap_k[p, :ntap[p]].tolist(), tap_o[p, :ntap[p]].tolist())) == found


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil", [
    (3, 2, 0, 1, True), (3, 2, 0, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 1, False), (3, 2, 1, 2, True)])
def test_pool_windows_give_torch_max_pool(kernel, stride, padding, dilation, ceil):
    x = torch.randn(1, 1, 9, 10, dtype=torch.float64)
    y = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil)
    nwin, win = pool_windows((9, 10), tuple(y.shape[2:]), (kernel,) * 2, (stride,) * 2, (padding,) * 2,
                             (dilation,) * 2)
    flat = x.reshape(-1)
    mine = torch.stack([flat[torch.from_numpy(win[o, :nwin[o]]).long()].max() for o in range(len(nwin))])
    assert torch.equal(mine, y.reshape(-1))
    nrev, rev = reach_of(nwin, win, 90)
    for p in range(90):
        assert set(rev[p, :nrev[p]].tolist()) == {o for o in range(len(nwin)) if p in win[o, :nwin[o]]}


def test_numba_cache_in_the_user_cache_and_no_openmp(tmp_path):
    """Kernels are cached under ``<cache_dir>/numba`` unless NUMBA_CACHE_DIR is set, and numba's threading layer is
    workqueue (never a second OpenMP runtime beside torch's)."""
    code = ("import numba, sigmadelta.runtime.events._jit as j, os; "
            "print(numba.config.CACHE_DIR); print(numba.config.THREADING_LAYER)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"SIGMADELTA_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(tmp_path / "numba"), "workqueue"]
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == str(tmp_path / "mine")
