"""fastconv.dask against in-memory fastconv, on a real distributed.LocalCluster.

Every result computed on the cluster is compared with the in-memory fastconv
call on the whole array.  Max pooling and ReLU pick or clamp values, so they
must match bit for bit.  A convolution block computes each output pixel with
the same formula, but the GEMM/BLAS kernels choose their blocking (and so
their summation order) from the block's size, so the last bits may differ;
those are compared against the floating-point bound of a sum of ``n`` terms
in any order, ``|error| <= n * eps * sum(|terms|)``, for each of the two
results.
"""
import dataclasses
import os
import pickle
import shutil
import signal
import time

import numpy as np
import pytest

import dask
import dask.array as da
import distributed

import fastconv
import fastconv.dask as fd
from fastconv.models import Conv2D, Dense, Flatten, MaxPooling2D, Sequential


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on the loopback interface, stopped afterwards."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _rng(seed=0):
    return np.random.default_rng(seed)


def _conv_bound(x, w, *, strides, padding, data_format, dilations, groups, bias, dtype):
    """``2 * n * eps * sum(|x| * |w|) (+ |bias|)``: what two summation orders may differ by."""
    KH, KW, Cg, _ = w.shape
    n = KH * KW * Cg + 1
    mag = fastconv.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), strides,
                          padding, data_format, dilations, groups=groups,
                          bias=None if bias is None else np.abs(bias), backend="numpy")
    return 2 * n * np.finfo(dtype).eps * mag + np.finfo(dtype).tiny


def assert_conv_equal(got, ref, x, w, *, strides=1, padding="VALID", data_format="NHWC",
                      dilations=1, groups=1, bias=None):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    bound = _conv_bound(x, w, strides=strides, padding=padding, data_format=data_format,
                        dilations=dilations, groups=groups, bias=bias, dtype=ref.dtype)
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= bound).all(), f"max error {err.max()} above the bound"


# --------------------------------------------------------------------------- conv2d grid
@dataclasses.dataclass(frozen=True)
class ConvCase:
    id: str
    kernel: tuple = (3, 3)          # (KH, KW)
    strides: object = 1
    dilations: object = 1
    padding: object = "VALID"
    shape: tuple = (3, 23, 19, 3)   # (N, H, W, C) in NHWC; permuted for NCHW
    chunks: tuple = ((3,), (9, 2, 7, 5), (8, 11), (3,))
    O: int = 4
    groups: int = 1
    bias: bool = False
    activation: object = None
    dtype: type = np.float32
    data_format: str = "NHWC"


KERNELS = {"1x1": ((1, 1), 1), "3x3": ((3, 3), 1), "5x5": ((5, 5), 1), "2x4": ((2, 4), 1),
           "3x3d2": ((3, 3), 2)}
PADDINGS = {"VALID": "VALID", "SAME": "SAME", "explicit": [[0, 0], [3, 1], [0, 4], [0, 0]]}

GRID = [ConvCase(f"{p}-s{s}-{k}", kernel=KERNELS[k][0], dilations=KERNELS[k][1], strides=s,
                 padding=PADDINGS[p])
        for p in PADDINGS for s in (1, 2, 3) for k in KERNELS]

SPECIAL = [
    ConvCase("groups", groups=3, shape=(2, 17, 15, 6), chunks=((1, 1), (6, 11), (8, 7), (6,)),
             O=9, padding="SAME"),
    ConvCase("depthwise", groups=4, shape=(2, 17, 15, 4), chunks=((2,), (5, 5, 7), (8, 7), (4,)),
             O=8, strides=2, padding="SAME"),
    ConvCase("bias-relu", bias=True, activation="relu", padding="SAME", strides=2),
    ConvCase("float64", dtype=np.float64, padding=[[0, 0], [2, 2], [1, 3], [0, 0]], strides=3),
    ConvCase("float64-dilated-rect", dtype=np.float64, kernel=(2, 3), dilations=(3, 2),
             padding="SAME", strides=(2, 1)),
    ConvCase("nchw-same-s2", data_format="NCHW", padding="SAME", strides=2, bias=True),
    ConvCase("nchw-explicit", data_format="NCHW", padding=[[0, 0], [0, 0], [2, 0], [1, 5]],
             kernel=(5, 3), strides=(3, 2)),
    # EK - 1 = 4: chunks equal to the halo, then smaller than it (merged by Dask's rule).
    ConvCase("chunks-equal-halo", kernel=(5, 5), shape=(1, 20, 16, 2),
             chunks=((1,), (4, 4, 4, 4, 4), (4, 4, 4, 4), (2,)), padding="SAME"),
    ConvCase("chunks-below-halo", kernel=(3, 3), dilations=2, shape=(2, 23, 19, 2),
             chunks=((1, 1), (9, 2, 7, 5), (1,) * 19, (2,)), padding="SAME", strides=2),
    ConvCase("chunks-below-stride", kernel=(1, 1), strides=4, shape=(1, 22, 21, 2),
             chunks=((1,), (2,) * 11, (3,) * 7, (2,)), padding="VALID"),
    ConvCase("all-padding-windows", kernel=(1, 1), strides=4, shape=(1, 10, 10, 1),
             chunks=((1,), (9, 1), (1, 9), (1,)), padding=[[0, 0], [6, 7], [5, 5], [0, 0]],
             bias=True),
    ConvCase("kernel-larger-than-input", kernel=(7, 7), shape=(2, 5, 6, 2),
             chunks=((1, 1), (2, 3), (3, 3), (2,)), padding="SAME"),
    ConvCase("uneven-N-H-W", chunks=((2, 1), (9, 2, 7, 5), (4, 4, 4, 7), (3,)), padding="SAME",
             strides=(3, 2), kernel=(5, 3)),
    ConvCase("one-chunk", chunks=((3,), (23,), (19,), (3,)), padding="SAME", strides=2),
]


def _conv_inputs(case):
    rng = _rng()
    N, H, W, C = case.shape
    x = rng.standard_normal(case.shape).astype(case.dtype)
    chunks = case.chunks
    if case.data_format == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        chunks = (chunks[0], chunks[3], chunks[1], chunks[2])
    KH, KW = case.kernel
    w = rng.standard_normal((KH, KW, C // case.groups, case.O)).astype(case.dtype)
    b = rng.standard_normal(case.O).astype(case.dtype) if case.bias else None
    return x, chunks, w, b


@pytest.mark.parametrize("case", GRID + SPECIAL, ids=lambda c: c.id)
def test_conv2d_equals_in_memory(client, case):
    x, chunks, w, b = _conv_inputs(case)
    kwargs = dict(strides=case.strides, padding=case.padding, data_format=case.data_format,
                  dilations=case.dilations, groups=case.groups, bias=b)
    ref = fastconv.conv2d(x, w, activation=case.activation, **kwargs)
    lazy = fd.conv2d(da.from_array(x, chunks=chunks), w, activation=case.activation, **kwargs)
    assert lazy.shape == ref.shape and lazy.dtype == ref.dtype
    assert lazy.chunks[0] == chunks[0]  # the batch chunks are kept
    got = lazy.compute()
    assert_conv_equal(got, ref, x, w, **kwargs)


def test_conv2d_chunk_plan_of_the_worked_example():
    """H=23 in chunks (9, 2, 7, 5), KH=3, DH=2 (EK=5), SH=2, SAME: rechunked to (7, 4, 7, 5)."""
    x = da.zeros((1, 23, 4, 1), chunks=((1,), (9, 2, 7, 5), (4,), (1,)), dtype=np.float32)
    y = fd.conv2d(x, np.ones((3, 1, 1, 1), np.float32), strides=(2, 1), dilations=(2, 1),
                  padding="SAME")
    assert y.chunks[1] == (5, 2, 3, 2)
    assert sum(y.chunks[1]) == 12


# --------------------------------------------------------------------------- relu / pooling
@dataclasses.dataclass(frozen=True)
class PoolCase:
    id: str
    ksize: object = 2
    strides: object = None
    padding: object = "VALID"
    chunks: tuple = ((3,), (9, 2, 7, 5), (8, 11), (3,))
    dtype: type = np.float32
    data_format: str = "NHWC"


POOLS = [
    PoolCase("2x2-valid-chunked-everywhere", chunks=((2, 1), (9, 2, 7, 5), (4, 4, 4, 7), (2, 1))),
    PoolCase("3x3-s2-same", ksize=3, strides=2, padding="SAME"),
    PoolCase("3x2-s3-same", ksize=(3, 2), strides=3, padding="SAME"),
    PoolCase("3x3-s1-explicit", ksize=3, strides=1, padding=[[0, 0], [1, 2], [2, 0], [0, 0]]),
    PoolCase("5x5-s2-chunks-below-halo", ksize=5, strides=2, padding="SAME",
             chunks=((3,), (3,) * 7 + (2,), (1,) * 19, (3,))),
    PoolCase("float64-nchw", ksize=3, strides=2, padding="SAME", dtype=np.float64,
             data_format="NCHW", chunks=((3,), (2, 1), (9, 2, 7, 5), (8, 11))),
]


def _seam_input(dtype):
    """Random values with NaN and -inf on the chunk seams (rows 8-9 and 10-11, column 3-4)."""
    x = _rng(1).standard_normal((3, 23, 19, 3)).astype(dtype)
    x[0, 8, 3, 0] = np.nan                # last row of a chunk
    x[1, 9, 4, 1] = np.nan                # first row of the next
    x[:, 10:12, 3:5, 2] = -np.inf         # a 2x2 block of -inf across a seam
    x[2, 15:23, :, 0] = -np.inf           # whole windows of -inf at the bottom
    return x


@pytest.mark.parametrize("case", POOLS, ids=lambda c: c.id)
def test_max_pool2d_equals_in_memory_bitwise(client, case):
    x = _seam_input(case.dtype)
    if case.data_format == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    ref = fastconv.max_pool2d(x, case.ksize, case.strides, case.padding, case.data_format)
    lazy = fd.max_pool2d(da.from_array(x, chunks=case.chunks), case.ksize, case.strides,
                         case.padding, case.data_format)
    got = lazy.compute()
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)   # NaN == NaN here, every other bit equal
    assert np.isnan(ref).any() and np.isneginf(ref).any()


def test_relu_bitwise_any_chunking_never_in_place(client):
    x = _seam_input(np.float32)
    xd = da.from_array(x, chunks=(2, 5, 7, 2))
    got = fd.relu(xd).compute()
    np.testing.assert_array_equal(got, fastconv.relu(x))
    assert np.isnan(got).any() and not np.isneginf(got).any()
    np.testing.assert_array_equal(xd.compute(), x)


def test_conv_relu_pool_pipeline_unfused(client):
    """With ``fuse=False`` every stage is its own chunked array, and the last two are exact."""
    x = _rng(2).standard_normal((2, 40, 33, 3)).astype(np.float32)
    w = _rng(3).standard_normal((3, 3, 3, 8)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 11, 9, 3))
    conv = fd.conv2d(xd, w, padding="SAME")
    relu = fd.relu(conv, fuse=False)
    lazy = fd.max_pool2d(relu, 2, padding="SAME", fuse=False)
    assert relu.name.startswith("_relu_block-") and lazy.name != conv.name
    ref_conv = fastconv.conv2d(x, w, padding="SAME")
    got_conv, got = dask.compute(conv, lazy)
    assert_conv_equal(got_conv, ref_conv, x, w, padding="SAME")
    # The pipeline's last step is exact: pool(relu(.)) of the cluster's convolution.
    np.testing.assert_array_equal(got, fastconv.max_pool2d(fastconv.relu(got_conv), 2,
                                                           padding="SAME"))


def _halo_layers(arr):
    return sorted(name.split("-")[1] for name in arr.__dask_graph__().layers
                  if name.startswith("fastconv-"))


def test_chained_calls_fuse_into_one_windowed_map():
    """relu(conv2d) is conv2d(activation='relu'); max_pool2d of it is conv_relu_pool's graph.

    Dask's own optimisation does not merge the windowed maps (measured: the
    unfused chain keeps twice the tasks after ``dask.optimize``); the fused
    chain has one heads layer and one windowed layer, and the same name
    (hence the same graph) as :func:`fastconv.dask.conv_relu_pool`.
    """
    x = da.zeros((1, 64, 64, 3), chunks=(1, 16, 16, 3), dtype=np.float32)
    w = np.ones((3, 3, 3, 8), np.float32)
    conv = fd.conv2d(x, w, padding="SAME", bias=np.ones(8, np.float32))
    assert fd.relu(conv).name == fd.conv2d(x, w, padding="SAME", bias=np.ones(8, np.float32),
                                           activation="relu").name
    chain = fd.max_pool2d(fd.relu(conv), 2, padding="SAME")
    fused = fd.conv_relu_pool(x, w, 2, padding="SAME", pool_padding="SAME",
                              bias=np.ones(8, np.float32))
    unfused = fd.max_pool2d(fd.relu(conv, fuse=False), 2, padding="SAME", fuse=False)
    assert chain.name == fused.name
    assert _halo_layers(chain) == ["halo", "heads"]
    assert _halo_layers(unfused) == ["halo", "halo", "heads", "heads"]
    blocks = x.npartitions
    (opt_chain,), (opt_unfused,) = dask.optimize(chain), dask.optimize(unfused)
    # per block: the input, its heads (not block (0, 0)'s), the windowed task
    assert len(opt_chain.__dask_graph__()) == 3 * blocks - 1
    assert len(opt_unfused.__dask_graph__()) > 2 * blocks + len(opt_chain.__dask_graph__())
    # pool straight after conv (no ReLU) fuses too; any other step in between does not
    assert _halo_layers(fd.max_pool2d(conv, 2)) == ["halo", "heads"]
    assert _halo_layers(fd.max_pool2d(conv + 0, 2)) == ["halo", "halo", "heads", "heads"]
    assert _halo_layers(fd.max_pool2d(conv, 2, data_format="NHWC", allow_rechunk=False)) == \
        ["halo", "halo", "heads", "heads"]
    with pytest.raises(TypeError, match="fuse must be True or False"):
        fd.relu(conv, fuse="yes")


FUSED = [  # (conv kernel, strides, padding, dilations, pool ksize, pool strides, pool padding)
    ((3, 3), 1, "SAME", 1, 2, None, "VALID"),
    ((5, 3), 2, [[0, 0], [3, 1], [0, 4], [0, 0]], 1, 3, 2, "SAME"),
    ((3, 3), 1, "VALID", 2, 3, 1, "SAME"),
    ((1, 1), 3, "SAME", 1, (2, 3), (3, 1), "VALID"),
]


@pytest.mark.parametrize("how", ["conv_relu_pool", "chain", "conv-pool"])
@pytest.mark.parametrize("case", FUSED, ids=lambda c: f"k{c[0]}-s{c[1]}-p{c[4]}s{c[5]}")
def test_conv_relu_pool_equals_the_chain(client, case, how):
    """One fused map equals in-memory conv (+bias) -> relu -> pool, over uneven/small chunks.

    ``conv_relu_pool`` is the explicit call, ``chain`` the fused
    ``max_pool2d(relu(conv2d(...)))`` and ``conv-pool`` pools the convolution
    without ReLU.
    """
    kernel, strides, padding, dilations, ksize, pstrides, ppad = case
    x = _rng(12).standard_normal((2, 31, 27, 3)).astype(np.float32)
    w = _rng(13).standard_normal(kernel + (3, 5)).astype(np.float32)
    b = _rng(14).standard_normal(5).astype(np.float32)
    xd = da.from_array(x, chunks=((1, 1), (9, 2, 7, 13), (3,) * 9, (3,)))
    conv = fastconv.conv2d(x, w, strides, padding, dilations=dilations, bias=b)
    if how == "conv_relu_pool":
        lazy = fd.conv_relu_pool(xd, w, ksize, pstrides, strides, padding, ppad,
                                 dilations=dilations, bias=b)
    else:
        lazy = fd.conv2d(xd, w, strides, padding, dilations=dilations, bias=b)
        lazy = fd.max_pool2d(fd.relu(lazy) if how == "chain" else lazy, ksize, pstrides, ppad)
    ref = fastconv.max_pool2d(conv if how == "conv-pool" else fastconv.relu(conv), ksize,
                              pstrides, ppad)
    assert _halo_layers(lazy) == ["halo", "heads"]
    assert lazy.shape == ref.shape and lazy.chunks[0] == (1, 1)
    got = lazy.compute()
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=strides, padding=padding,
                                            data_format="NHWC", dilations=dilations,
                                            groups=1, bias=b, dtype=np.float32),
                                ksize, pstrides, ppad)
    assert (np.abs(got - ref) <= bound).all()


def test_fused_chain_nchw_float64(client):
    """The fused chain in NCHW and float64, strided, with groups, over uneven chunks."""
    x = _rng(15).standard_normal((2, 4, 29, 26))
    w = _rng(16).standard_normal((3, 3, 2, 6))
    xd = da.from_array(x, chunks=((1, 1), (4,), (10, 3, 16), (7, 7, 12)))
    lazy = fd.max_pool2d(fd.relu(fd.conv2d(xd, w, 2, "SAME", "NCHW", groups=2)), 3, 2, "SAME",
                         "NCHW")
    assert _halo_layers(lazy) == ["halo", "heads"] and lazy.dtype == np.float64
    conv = fastconv.conv2d(x, w, 2, "SAME", "NCHW", groups=2)
    ref = fastconv.max_pool2d(fastconv.relu(conv), 3, 2, "SAME", "NCHW")
    got = lazy.compute()
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=2, padding="SAME", data_format="NCHW",
                                            dilations=1, groups=2, bias=None,
                                            dtype=np.float64), 3, 2, "SAME", "NCHW")
    assert got.shape == ref.shape and (np.abs(got - ref) <= bound).all()


@dataclasses.dataclass(frozen=True)
class WindowCase:
    id: str
    layout: str
    rows: tuple     # [r0, r1) in the joined block's rows
    cols: tuple


WINDOWS = [
    WindowCase("inside-contiguous-view", "NHWC", (2, 5), (0, 7)),
    WindowCase("inside-strided", "NHWC", (1, 6), (1, 7)),
    WindowCase("right-head", "NHWC", (0, 6), (3, 9)),
    WindowCase("lower-head", "NHWC", (4, 8), (1, 7)),
    WindowCase("all-four-parts", "NHWC", (1, 8), (1, 9)),
    WindowCase("all-four-parts-nchw", "NCHW", (0, 8), (2, 9)),
]


@pytest.mark.parametrize("case", WINDOWS, ids=lambda c: c.id)
def test_window_is_the_joined_slice_contiguous(case):
    """A block's window joined from its heads equals the same slice of the whole array.

    The whole array is cut into 6x7 blocks; the block at (0, 0) is joined
    with the heads (2 rows, 2 columns) of its right, lower and lower-right
    neighbours, as the halo graph passes them.
    """
    x = _rng(30).standard_normal((1, 12, 14, 3)).astype(np.float32)
    h_ax, w_ax = (1, 2) if case.layout == "NHWC" else (2, 3)
    if case.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def blk(i, j):
        idx = [slice(None)] * 4
        idx[h_ax], idx[w_ax] = slice(6 * i, 6 * i + 6), slice(7 * j, 7 * j + 7)
        return np.ascontiguousarray(x[tuple(idx)])

    heads = {ij: fd._cut_heads(blk(*ij), h_ax, w_ax, 2, 2) for ij in [(0, 1), (1, 0), (1, 1)]}
    parts = (blk(0, 0), heads[0, 1], heads[1, 0], heads[1, 1])
    got = fd._window(parts, h_ax, w_ax, case.rows, case.cols)
    idx = [slice(None)] * 4
    idx[h_ax], idx[w_ax] = slice(*case.rows), slice(*case.cols)
    np.testing.assert_array_equal(got, x[tuple(idx)])
    assert got.flags.c_contiguous
    # a contiguous window inside the block is the block's own memory, nothing copied
    assert np.shares_memory(got, parts[0]) == (case.id == "inside-contiguous-view")


def test_scratch_is_reused_per_thread_and_capped(monkeypatch):
    """The per-thread work arrays: one buffer per slot, grown, never above the cap."""
    a = fd._scratch("test-slot", (1, 40, 30, 3), np.float32)
    b = fd._scratch("test-slot", (1, 20, 30, 3), np.float32)   # smaller: the same buffer
    assert a.flags.c_contiguous and b.shape == (1, 20, 30, 3) and np.shares_memory(a, b)
    assert a.__array_interface__["data"][0] % fastconv._tuning.OUTPUT_ALIGN_BYTES == 0
    c = fd._scratch("test-slot", (1, 80, 30, 3), np.float64)   # larger: a new buffer
    assert c.dtype == np.float64 and not np.shares_memory(a, c)
    assert not np.shares_memory(c, fd._scratch("other-slot", (1, 80, 30, 3), np.float64))
    import threading
    seen = []
    t = threading.Thread(target=lambda: seen.append(fd._scratch("test-slot", (10,), np.float64)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], c)                      # each thread has its own
    monkeypatch.setattr(fd, "_SCRATCH_MAX_BYTES", 1024)
    big = fd._scratch("test-slot", (1, 20, 30, 3), np.float32)   # above the cap: fresh
    assert not np.shares_memory(big, c) and not np.shares_memory(
        big, fd._scratch("test-slot", (1, 20, 30, 3), np.float32))


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("cap", [64 * 2**20, 0], ids=["reused", "over-the-cap"])
def test_fused_blocks_on_one_thread_keep_their_results(monkeypatch, scheduler, cap):
    """Every block of a fused chain on one (or a few) threads reusing the same work arrays.

    A block's result must never be a view of the scratch arrays: with the
    synchronous scheduler all 20 blocks run in turn on one thread, so a
    result aliasing the scratch would be overwritten by the next block.
    """
    monkeypatch.setattr(fd, "_SCRATCH_MAX_BYTES", cap)
    x = _rng(31).standard_normal((2, 40, 37, 3)).astype(np.float32)
    w = _rng(32).standard_normal((3, 3, 3, 6)).astype(np.float32)
    b = _rng(33).standard_normal(6).astype(np.float32)
    xd = da.from_array(x, chunks=((1, 1), (10, 10, 9, 11), (8, 9, 10, 10), (3,)))
    lazy = fd.max_pool2d(fd.relu(fd.conv2d(xd, w, padding="SAME", bias=b)), 2, padding="SAME")
    assert _halo_layers(lazy) == ["halo", "heads"]
    got = lazy.compute(scheduler=scheduler, num_workers=3)
    ref = fastconv.max_pool2d(fastconv.conv2d(x, w, padding="SAME", bias=b, activation="relu"),
                              2, padding="SAME")
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=1, padding="SAME",
                                            data_format="NHWC", dilations=1, groups=1, bias=b,
                                            dtype=np.float32), 2, padding="SAME")
    assert got.shape == ref.shape and (np.abs(got - ref) <= bound).all()
    # and the unfused windowed maps (the window scratch only) on the same thread
    unfused = fd.max_pool2d(fd.conv2d(xd, w, padding="SAME", bias=b), 2, padding="SAME",
                            fuse=False)
    conv = fastconv.conv2d(x, w, padding="SAME", bias=b)
    got = unfused.compute(scheduler=scheduler, num_workers=3)
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=1, padding="SAME",
                                            data_format="NHWC", dilations=1, groups=1, bias=b,
                                            dtype=np.float32), 2, padding="SAME")
    assert (np.abs(got - fastconv.max_pool2d(conv, 2, padding="SAME")) <= bound).all()


@dataclasses.dataclass(frozen=True)
class BandCase:
    id: str
    kernel: tuple
    strides: object
    padding: object
    dilations: object
    ksize: object
    pool_strides: object
    pool_padding: object
    band_bytes: int          # convolution output bytes per band (a row is 5 channels)


BANDS = [
    BandCase("same-3x3-pool2", (3, 3), 1, "SAME", 1, 2, None, "VALID", 1),
    BandCase("strided-explicit-pool3s2-same", (5, 3), 2, [[0, 0], [3, 1], [0, 4], [0, 0]], 1,
             3, 2, "SAME", 400),
    BandCase("dilated-valid-overlapping-pool", (3, 3), 1, "VALID", 2, 3, 1, "SAME", 1500),
    BandCase("1x1-stride3-pool-2x3", (1, 1), 3, "SAME", 1, (2, 3), (3, 1), "VALID", 1),
    BandCase("non-square-all-strided", (4, 2), (3, 1), "SAME", (1, 2), (3, 2), (2, 1), "SAME",
             700),
]


@pytest.mark.parametrize("case", BANDS, ids=lambda c: c.id)
def test_fused_blocks_in_bands_give_the_whole_blocks_bits(monkeypatch, case):
    """A fused block whose convolution output exceeds the work-array cap runs in bands of rows.

    With the cap at 0 every block is cut into bands of ``band_bytes`` of
    convolution output (more convolution calls than blocks); with the
    default cap each block runs whole.  The direct kernel computes every
    pixel the same way, so both give the same bits, and they equal the
    in-memory chain within the summation-order bound.  Two images (one band
    loop each), uneven chunks, the last band taking the remainder.
    """
    x = _rng(34).standard_normal((2, 61, 47, 3)).astype(np.float32)
    w = _rng(35).standard_normal(case.kernel + (3, 5)).astype(np.float32)
    b = _rng(36).standard_normal(5).astype(np.float32)
    xd = da.from_array(x, chunks=((1, 1), (20, 2, 27, 12), (23, 24), (3,)))

    def run():
        lazy = fd.conv_relu_pool(xd, w, case.ksize, case.pool_strides, case.strides,
                                 case.padding, case.pool_padding, dilations=case.dilations,
                                 bias=b, algorithm="direct")
        calls.clear()
        return lazy.compute(scheduler="synchronous"), len(calls), lazy.numblocks

    calls = []
    conv2d = fastconv.conv2d
    monkeypatch.setattr(fastconv, "conv2d", lambda *a, **k: calls.append(1) or conv2d(*a, **k))
    whole, whole_calls, numblocks = run()
    monkeypatch.setattr(fd, "_SCRATCH_MAX_BYTES", 0)
    monkeypatch.setattr(fd, "_BAND_BYTES", case.band_bytes)
    banded, banded_calls, _ = run()
    assert whole_calls == np.prod(numblocks) < banded_calls
    np.testing.assert_array_equal(banded, whole)
    ref = fastconv.max_pool2d(conv2d(x, w, case.strides, case.padding, dilations=case.dilations,
                                     bias=b, activation="relu"),
                              case.ksize, case.pool_strides, case.pool_padding)
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=case.strides, padding=case.padding,
                                            data_format="NHWC", dilations=case.dilations,
                                            groups=1, bias=b, dtype=np.float32),
                                case.ksize, case.pool_strides, case.pool_padding)
    assert banded.shape == ref.shape and (np.abs(banded - ref) <= bound).all()


def test_bands_keep_auto_kernel_choice(monkeypatch):
    """With ``algorithm="auto"`` a block is not cut into bands of too few output pixels.

    The "auto" rules count output pixels, so a band must keep more than any
    rule's limit to get the kernel the whole block gets.  Bands here are of
    one pooled row asked for (two to six convolution rows once merged for
    the 3-row halo) out of 4000.
    """
    most = max(p for p, _ in fastconv._tuning.AUTO_IM2COL_RULES)
    conv, pool = (3, 1, 1, 1, 4000), (2, 2, 0, 0, 2000)
    monkeypatch.setattr(fd, "_SCRATCH_MAX_BYTES", 0)
    for pixels, auto_bands in [(most + 1, True), (most // 8, False)]:
        row = pixels * 8 * 4                           # 8 float32 channels per pixel
        monkeypatch.setattr(fd, "_BAND_BYTES", 2 * row)
        assert len(fd._bands(4000, conv, pool, row, pixels, "direct")) > 500
        bands = fd._bands(4000, conv, pool, row, pixels, "auto")
        assert (bands is not None and len(bands) > 500) if auto_bands else bands is None


def test_conv_relu_pool_errors_at_build_time():
    with pytest.raises(ValueError, match=r"x\.rechunk\(\{3: -1\}\)"):
        fd.conv_relu_pool(_X.rechunk({3: 2}), _W, 2)
    with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID'"):
        fd.conv_relu_pool(_X, _W, 2, pool_padding="FULL")


# --------------------------------------------------------------------------- laziness, errors
class _CountingSource:
    """An array-like that counts the reads Dask makes of it."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype, self.ndim, self.reads = arr, arr.shape, arr.dtype, \
            arr.ndim, 0

    def __getitem__(self, index):
        self.reads += 1
        return self.arr[index]


def test_building_the_graph_computes_nothing():
    src = _CountingSource(_rng().standard_normal((2, 16, 16, 2)).astype(np.float32))
    xd = da.from_array(src, chunks=(1, 8, 8, 2), meta=np.empty((0, 0, 0, 0), np.float32))
    w = np.ones((3, 3, 2, 2), np.float32)
    lazy = fd.max_pool2d(fd.relu(fd.conv2d(xd, w, strides=2, padding="SAME")), 2)
    images = _CountingSource(_rng().random((4, 12, 12, 1), dtype=np.float32))
    pred = fd.predict(_model(), da.from_array(images, chunks=(2, 12, 12, 1),
                                              meta=np.empty((0, 0, 0, 0), np.float32)))
    assert src.reads == 0 and images.reads == 0
    with dask.config.set(scheduler="synchronous"):
        lazy.compute()
        pred.compute()
    assert src.reads > 0 and images.reads > 0


@dataclasses.dataclass(frozen=True)
class ErrorCase:
    id: str
    call: object          # builds the lazy result; must raise at once
    exc: type
    match: str


_X = da.zeros((2, 12, 12, 4), chunks=(1, 6, 6, 4), dtype=np.float32)
_W = np.ones((3, 3, 4, 2), np.float32)

ERRORS = [
    ErrorCase("channels-chunked-nhwc",
              lambda: fd.conv2d(_X.rechunk({3: 2}), _W), ValueError, r"x\.rechunk\(\{3: -1\}\)"),
    ErrorCase("channels-chunked-nchw",
              lambda: fd.conv2d(_X.transpose(0, 3, 1, 2).rechunk({1: 2}), _W,
                                data_format="NCHW"), ValueError, r"x\.rechunk\(\{1: -1\}\)"),
    ErrorCase("integer-input", lambda: fd.conv2d(_X.astype(np.int32), _W), TypeError,
              r"astype\(np\.float32\)"),
    ErrorCase("bad-padding", lambda: fd.conv2d(_X, _W, padding="FULL"), ValueError,
              "padding must be 'SAME', 'VALID'"),
    ErrorCase("channel-mismatch", lambda: fd.conv2d(_X, np.ones((3, 3, 3, 2))), ValueError,
              "channel mismatch"),
    ErrorCase("valid-kernel-too-big", lambda: fd.conv2d(_X, np.ones((13, 3, 4, 1))),
              ValueError, "larger than the padded input"),
    ErrorCase("num-threads-zero", lambda: fd.conv2d(_X, _W, num_threads=0), ValueError,
              "num_threads must not be 0"),
    ErrorCase("no-rechunk-allowed",
              lambda: fd.conv2d(_X.rechunk({1: (6, 1, 5)}), _W, allow_rechunk=False),
              ValueError, r"allow_rechunk=True or rechunk first, e\.g\. x\.rechunk\(\{1: "),
    ErrorCase("pool-window-in-padding",
              lambda: fd.max_pool2d(_X, 2, 2, [[0, 0], [2, 0], [0, 0], [0, 0]]), ValueError,
              "lie entirely in the padding"),
    ErrorCase("relu-integer", lambda: fd.relu(_X.astype(np.int64)), TypeError, "float32"),
    ErrorCase("predict-spatially-chunked",
              lambda: fd.predict(_model(), da.zeros((4, 12, 12, 1), chunks=(2, 6, 12, 1))),
              ValueError, r"x\.rechunk\(\{1: -1\}\)"),
    ErrorCase("predict-wrong-shape",
              lambda: fd.predict(_model(), da.zeros((4, 10, 12, 1), chunks=(2, 10, 12, 1))),
              ValueError, "expects input of shape"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.id)
def test_errors_at_graph_build_time(case):
    with pytest.raises(case.exc, match=case.match):
        case.call()


def test_in_memory_messages_are_reused():
    """The error of a bad argument is the in-memory call's own message."""
    with pytest.raises(ValueError) as in_memory:
        fastconv.conv2d(np.zeros((2, 12, 12, 4), np.float32), _W, strides=[1, 2, 2, 2])
    with pytest.raises(ValueError) as lazy:
        fd.conv2d(_X, _W, strides=[1, 2, 2, 2])
    assert str(lazy.value) == str(in_memory.value)


# --------------------------------------------------------------------------- models
def _model():
    return Sequential([Conv2D(4, 3, activation="relu", input_shape=(12, 12, 1)),
                       MaxPooling2D(2), Flatten(), Dense(5, activation="softmax")], seed=0)


def test_used_sequential_pickles():
    model = _model()
    x = _rng(4).random((7, 12, 12, 1), dtype=np.float32)
    ref = model.predict(x)                      # creates the per-thread buffers
    assert "_local" in model.__dict__
    copy = pickle.loads(pickle.dumps(model))
    assert "_local" not in copy.__dict__
    np.testing.assert_array_equal(copy.predict(x), ref)
    np.testing.assert_array_equal(model.predict(x), ref)  # the original still works


@pytest.mark.parametrize("chunks", [(32, 32, 16), (13, 30, 37)], ids=["batch-aligned", "uneven"])
def test_predict_on_the_cluster_with_a_used_model(client, chunks):
    model = _model()
    x = _rng(5).random((80, 12, 12, 1), dtype=np.float32)
    ref = model.predict(x, batch_size=16)
    lazy = fd.predict(model, da.from_array(x, chunks=(chunks, 12, 12, 1)), batch_size=16)
    assert lazy.shape == ref.shape and lazy.chunks == (chunks, (5,))
    got = lazy.compute()
    # Softmax outputs in [0, 1]: a Dense GEMM over a different number of rows may round
    # differently in the last bit of float32, nothing more.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- cluster
def _listening(pid):
    """The ``(ip, port)`` pairs process ``pid`` listens on (TCP/UDP, IPv4/IPv6)."""
    import psutil
    proc = psutil.Process(pid)
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)(
        kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def test_the_test_cluster_listens_on_loopback_only(client):
    """Scheduler (this process), its HTTP server and the workers: 127.0.0.1, never 8787."""
    addresses = _listening(os.getpid())
    for pid in client.run(os.getpid).values():
        addresses |= _listening(pid)
    assert len(addresses) >= 4, addresses      # scheduler, HTTP server, two workers
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
    assert 8787 not in {port for _, port in addresses}


# --------------------------------------------------------------------------- threads
def test_one_thread_per_dask_task_by_default(client):
    """Inside a worker's task fastconv's default is one thread; outside, every core."""
    def default_threads():
        return fastconv.get_num_threads()

    assert client.submit(default_threads, pure=False).result() == 1
    assert not fastconv._threads._in_dask_task()


# --------------------------------------------------------------------------- faults
def _gate(block, event_name):
    """Wait, off the worker's thread slot, until the test opens the gate."""
    distributed.secede()
    distributed.Event(event_name).wait()
    distributed.rejoin()
    return block


def _held_keys(dask_scheduler):
    """``{worker address: keys of results in memory there}``."""
    return {ws.address: [str(ts.key) for ts in ws.has_what]
            for ws in dask_scheduler.workers.values()}


def test_worker_killed_holding_intermediates(client):
    """SIGKILL a worker *during* a computation, while it holds intermediate results of it.

    The pooled blocks wait behind a gate (an Event) after their convolution,
    ReLU and pool have run, so the computation is submitted and unfinished
    while the workers hold its intermediates; the worker holding the most is
    killed, the scheduler drops it, the gate opens, and Dask recomputes the
    lost pieces: the result is still the in-memory one.
    """
    x = _rng(6).standard_normal((2, 48, 40, 2)).astype(np.float32)
    w = _rng(7).standard_normal((3, 3, 2, 4)).astype(np.float32)
    conv = fd.conv2d(da.from_array(x, chunks=(1, 12, 10, 2)), w, strides=2, padding="SAME")
    pooled = fd.max_pool2d(fd.relu(conv), 3, 2, "SAME")
    event = distributed.Event(f"gate-{pooled.name}", client=client)
    lazy = pooled.map_blocks(_gate, event.name, dtype=pooled.dtype)
    future = client.compute(lazy)
    try:
        deadline = time.monotonic() + 60
        while True:
            held = client.run_on_scheduler(_held_keys)
            if sum(map(len, held.values())) >= pooled.npartitions:
                break
            assert time.monotonic() < deadline, f"intermediates never held: {held}"
            time.sleep(0.05)
        victim = max(held, key=lambda addr: len(held[addr]))
        assert held[victim] and not future.done(), held
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        while victim in client.scheduler_info()["workers"]:
            assert time.monotonic() < deadline, "the scheduler never dropped the killed worker"
            time.sleep(0.05)
        assert not future.done()
    finally:
        event.set()
    got = future.result(timeout=120)
    ref_conv = fastconv.conv2d(x, w, 2, "SAME")
    ref = fastconv.max_pool2d(fastconv.relu(ref_conv), 3, 2, "SAME")
    # Max and ReLU are exact, 1-Lipschitz: the convolution's bound, pooled, carries over.
    bound = fastconv.max_pool2d(_conv_bound(x, w, strides=2, padding="SAME",
                                            data_format="NHWC", dilations=1, groups=1,
                                            bias=None, dtype=np.float32), 3, 2, "SAME")
    assert got.shape == ref.shape and (np.abs(got - ref) <= bound).all()
    client.wait_for_workers(2, timeout=60)


# --------------------------------------------------------------------------- on disk
def test_zarr_to_zarr_pipeline_spot_checked_tiles(client, tmp_path):
    """conv -> relu -> pool streamed from a zarr store into a zarr store on the cluster.

    The input is written block by block by the workers and never held whole
    by any process; spot-checked output tiles equal the in-memory pipeline on
    the same tile of the input (output rows ``[a, b)`` read input rows
    ``[2a, 2b + 2)`` for a 2x2 pool of a VALID 3x3 convolution).
    """
    zarr = pytest.importorskip("zarr")
    H, W, chunk = 768, 640, 96
    src, dst = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
    w = _rng(8).standard_normal((3, 3, 1, 2)).astype(np.float32)
    b = np.array([0.1, -0.1], np.float32)
    image = da.random.default_rng(9).standard_normal((1, H, W, 1), chunks=(1, chunk, chunk, 1),
                                                    dtype=np.float32)
    image.to_zarr(src)
    out = fd.max_pool2d(fd.conv2d(da.from_zarr(src), w, padding="VALID", bias=b,
                                  activation="relu"), 2)
    out.to_zarr(dst)
    stored_in, stored_out = zarr.open_array(src, mode="r"), zarr.open_array(dst, mode="r")
    assert stored_out.shape == (1, (H - 2) // 2, (W - 2) // 2, 2)
    for a, bb, c0, c1 in [(0, 40, 0, 40), (40, 70, 45, 60), (350, 383, 300, 319)]:
        tile = np.asarray(stored_in[:, 2 * a:2 * bb + 2, 2 * c0:2 * c1 + 2, :])
        ref = fastconv.max_pool2d(fastconv.conv2d(tile, w, padding="VALID", bias=b,
                                                  activation="relu"), 2)
        got = np.asarray(stored_out[:, a:bb, c0:c1, :])
        # relu and max are 1-Lipschitz, so the convolution's bound carries over (pooled).
        bound = _conv_bound(tile, w, strides=1, padding="VALID", data_format="NHWC",
                            dilations=1, groups=1, bias=b, dtype=np.float32)
        assert (np.abs(got - ref) <= fastconv.max_pool2d(bound, 2)).all()


def _memory_status():
    """This process's peak and current resident set, in bytes (Linux ``/proc``)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture
def scratch(tmp_path):
    """A temporary directory removed afterwards (pytest keeps its last few, here gigabytes)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def _warm_worker():
    """Import and run what a streaming task uses, then report the worker's memory."""
    import zarr  # noqa: F401  (the workers read and write the stores)
    x = np.ones((1, 16, 16, 1), np.float32)
    fastconv.max_pool2d(fastconv.conv2d(x, np.ones((3, 3, 1, 1), np.float32), num_threads=1,
                                        activation="relu"), 2, num_threads=1)
    return _memory_status()


#: What a worker holds while streaming conv -> relu -> pool, in blocks, beside its share of a
#: row: per running task the block read from the store, the window joined with its halo and
#: the convolution's output (the thread's two work arrays, kept between tasks) and the pooled
#: block, plus blocks read ahead and allocator slack.  Measured on this test (1024 x 1024
#: float32, two workers) before the work arrays were reused: peaks of 14 to 18 blocks above
#: the idle resident set; the estimate is kept (reuse only lowers the peak).
_BLOCKS_IN_FLIGHT = 16


def _stream_chunk(room, itemsize, width_blocks, workers):
    """The largest power-of-two chunk side whose estimated data per worker fits in ``room``.

    A worker holds the blocks in flight and its share of one row of input
    blocks (plus one), each kept until the block below it has been read
    and its head cut (the halo arrives as those small copies).
    """
    side = 4096
    while side > 64 and (_BLOCKS_IN_FLIGHT + (width_blocks + 1) / workers) * side * side \
            * itemsize > room:
        side //= 2
    return side


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_larger_than_memory_streams_with_bounded_worker_memory(scratch):
    """An on-disk image 4x the cluster's total memory limit, through conv -> relu -> pool.

    Two workers of ``LIMIT`` each (the Nanny's limit: Dask spills at 70 %,
    pauses the worker at 80 % and kills it at 95 % of it); a worker idles
    at about 100 MiB, so ``LIMIT`` leaves room for blocks of a few MiB (the
    fewer the blocks, the fewer the tasks and the shorter the test).  The chunk side
    is derived from the limit: after a warm-up each worker reports its
    resident memory, and the side is the largest power of two whose
    estimated data per worker (see :func:`_stream_chunk`) fits in the room
    between that and the pause threshold.  The image is four chunks
    wide and as tall as needed for ``4 * 2 * LIMIT`` bytes; this process
    writes it to a zarr store slab by slab, the workers read it with
    ``da.from_zarr``, run the chained ``max_pool2d(relu(conv2d(...)))`` (one
    fused windowed map) and write it with ``to_zarr``.  Afterwards every
    worker's high-water mark (``VmHWM``) must be below the pause threshold,
    and the same processes must still be running (a worker killed for
    memory would have been restarted with a fresh mark).  Spot-checked
    tiles equal the in-memory pipeline on the same input tile.
    """
    zarr = pytest.importorskip("zarr")
    LIMIT, WORKERS = 256 * 2**20, 2
    pause = dask.config.get("distributed.worker.memory.pause")
    src, dst = str(scratch / "in.zarr"), str(scratch / "out.zarr")
    w = _rng(11).standard_normal((3, 3, 1, 1)).astype(np.float32)
    b = np.array([0.05], np.float32)
    with distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                  memory_limit=LIMIT, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        idle = max(st["VmRSS"] for st in client.run(_warm_worker).values())
        room = pause * LIMIT - idle
        chunk = _stream_chunk(room, 4, 4, WORKERS)
        assert chunk >= 256, f"a worker idles at {idle / 2**20:.0f} MiB: no room in {LIMIT}"
        W = 4 * chunk
        H = -(-4 * WORKERS * LIMIT // (W * 4 * chunk)) * chunk
        assert H * W * 4 >= 4 * WORKERS * LIMIT
        stored_in = zarr.create_array(src, shape=(1, H, W, 1), chunks=(1, chunk, chunk, 1),
                                      dtype=np.float32, compressors=None)
        rng = _rng(10)
        for r in range(0, H, 8 * chunk):
            stored_in[:, r:r + 8 * chunk] = rng.random((1, min(8 * chunk, H - r), W, 1),
                                                       dtype=np.float32) - 0.5
        pids = client.run(os.getpid)
        out = fd.max_pool2d(fd.relu(fd.conv2d(da.from_zarr(src), w, bias=b)), 2)
        assert out.name.startswith("fastconv-halo-")          # fused: one windowed map
        assert out.name == fd.conv_relu_pool(da.from_zarr(src), w, 2, bias=b).name
        out.to_zarr(dst, compressors=None)
        status = client.run(_memory_status)
        assert client.run(os.getpid) == pids, "a worker was restarted"
        limits = {a: info["memory_limit"] for a, info in
                  client.scheduler_info()["workers"].items()}
    for addr, st in status.items():
        print(f"{addr}: peak RSS {st['VmHWM'] / 2**20:.1f} MiB (idle {idle / 2**20:.1f}), "
              f"limit {LIMIT / 2**20:.0f} MiB (pause at {pause:.0%}), chunks {chunk}, "
              f"input 1x{H}x{W}x1 = {H * W * 4 / 2**20:.0f} MiB")
        assert limits[addr] == LIMIT
        assert st["VmHWM"] < pause * LIMIT, f"{addr}: peak {st['VmHWM'] / 2**20:.0f} MiB"
    stored_out = zarr.open_array(dst, mode="r")
    assert stored_out.shape == (1, (H - 2) // 2, (W - 2) // 2, 1)
    OH, OW = stored_out.shape[1:3]
    for a, bb, c0, c1 in [(0, 24, 0, 24), (chunk // 2 - 7, chunk // 2 + 9, chunk - 5, chunk + 8),
                          (OH // 2 - 10, OH // 2 + 10, 0, OW), (OH - 20, OH, OW - 17, OW)]:
        tile = np.asarray(stored_in[:, 2 * a:2 * bb + 2, 2 * c0:2 * c1 + 2, :])
        ref = fastconv.max_pool2d(fastconv.relu(fastconv.conv2d(tile, w, bias=b)), 2)
        got = np.asarray(stored_out[:, a:bb, c0:c1, :])
        bound = _conv_bound(tile, w, strides=1, padding="VALID", data_format="NHWC",
                            dilations=1, groups=1, bias=b, dtype=np.float32)
        assert (np.abs(got - ref) <= fastconv.max_pool2d(bound, 2)).all()
