"""fastconv on Dask arrays: images larger than memory, datasets larger than one machine.

The functions here have the names and signatures of the in-memory ones
(:func:`fastconv.conv2d`, :func:`fastconv.relu`, :func:`fastconv.max_pool2d`,
:meth:`fastconv.models.Sequential.predict`), take anything
``dask.array.asarray`` accepts and return a lazy ``dask.array.Array`` equal to
the in-memory result.  This module needs the ``fastconv[dask]`` extra
(``dask[array]`` and ``distributed``); ``import fastconv`` never imports it.

How a strided, padded window is split over chunks
-------------------------------------------------
Along one spatial axis of size ``H`` (the same holds for ``W``), with kernel
``KH``, stride ``SH``, dilation ``DH``, effective kernel
``EK = (KH - 1) * DH + 1`` and the global padding ``(P0, P1)`` that the
in-memory call would use (TensorFlow's ``SAME``/``VALID`` rules or explicit
pairs), output row ``o`` reads the padded input rows
``[o * SH - P0, o * SH - P0 + EK - 1]``.

* **Owner rule.** Output row ``o`` belongs to the chunk that holds input row
  ``clip(o * SH - P0, 0, H - 1)``, the first row of its window.  With chunk
  starts ``c_0 = 0 < c_1 < ... < c_n = H`` block ``j`` owns the rows
  ``[A(c_j), A(c_{j+1}))`` with ``A(c) = min(OH, ceil((c + P0) / SH))`` for
  ``0 < c < H``, ``A(0) = 0`` and ``A(H) = OH``.
* **One-sided halo.** The last window a block owns ends at most ``EK - 1``
  rows past the block, so every block is extended by the first ``EK - 1``
  rows of its lower neighbour, the first ``EK - 1`` columns of its right
  neighbour and the corner of its lower-right one; no block needs anything
  from above or from the left.
* **Per-block padding.** Block ``j`` owning ``[a, b)`` needs the padded rows
  ``[lo, hi]`` with ``lo = a * SH - P0`` and ``hi = (b - 1) * SH - P0 + EK - 1``.
  It runs the in-memory operation on its rows ``[max(lo, 0), min(hi, H - 1)]``
  with explicit padding ``top = max(0, -lo)`` and ``bottom = max(0, hi - H + 1)``,
  which yields exactly ``(hi - lo + 1 - EK) // SH + 1 = b - a`` rows: padding is
  only ever added where the global input is padded, so each output pixel is
  computed from the same values as in memory.
* **Chunk arithmetic.** Before mapping, chunks narrower than the halo
  ``EK - 1`` are merged with Dask's own rule
  (``dask.array.overlap.ensure_minimum_chunksize``), and a block that would
  own no output row (narrower than the stride, or past the last ``VALID``
  window), or whose windows would all lie in the padding, is merged into its
  neighbour.  The output chunks along the axis are the counts ``b - a``.
  With ``allow_rechunk=False`` a needed rechunk raises instead.

How the halo travels
--------------------
The result is what ``dask.array.map_overlap(depth={H: (0, EK - 1), W: (0,
EK - 1)}, boundary="none", trim=False)`` would compute, but the graph is
built here, in two steps.  First a small task per block copies the block's
first rows, first columns and corner (its *heads*); then one task per block
joins the block with the heads of its lower, right and lower-right
neighbours and runs the in-memory operation.  A block waits only for small
copies, never keeps a whole neighbouring block alive (as views into it
would), so a worker streaming an image holds about one row of blocks plus
the blocks it is working on.

Inside that task the block and the heads are copied once, into exactly the
rows and columns the operation reads, as one C-contiguous array (the
block itself when it already is that), so the in-memory call never copies
its input again.  That array, and in a fused chain the convolution's
output, live only during the task: each worker thread keeps one buffer for
each and reuses it for the next block (at most ``_SCRATCH_MAX_BYTES``
each; larger ones are allocated per task).  Fresh memory would cost page
faults on every block, all the more on a worker, whose environment sets
``MALLOC_TRIM_THRESHOLD_`` and so maps every large array afresh.  A fused
block whose convolution output would exceed that cap runs in bands of
rows instead (about ``_tuning.DASK_BAND_BYTES`` of convolution output
each), split by the same owner rule as the blocks, so big chunks never
need a block-sized intermediate.

Chained calls fuse
------------------
Dask's graph optimisation fuses chains of blockwise layers, but not a chain
of windowed maps: every convolution, ReLU and pooling would keep its own
chunked intermediate.  So the chain is recognised when it is built:
``relu`` of a :func:`conv2d` result is that convolution with
``activation="relu"``, and :func:`max_pool2d` of a :func:`conv2d` result
(with or without the ReLU) is one windowed map, :func:`conv_relu_pool`'s,
whose blocks run convolution, ReLU and pooling on their rows and return the
pooled block; the convolution's output never becomes a Dask chunk.  Pass
``fuse=False`` to ``relu`` or ``max_pool2d`` when the intermediate is needed
too (computing both from a fused chain would run the convolution twice).

Threads
-------
Dask supplies the parallelism: every block call uses ``num_threads=1``
unless told otherwise.  For a few big chunks, run one single-threaded
worker per host and pass ``num_threads=-1`` (all the host's cores).
"""
import dataclasses
import functools
import math
import threading

import numpy as np

try:
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastconv.dask needs Dask: pip install 'fastconv[dask]' "
                      "(dask[array] and distributed).") from exc

import fastconv
from . import _ops, _tuning
from ._shapes import resolve_window
from ._threads import resolve_num_threads
from ._validation import check_activation, check_data_format, positive_int, spatial_pair

__all__ = ["conv2d", "relu", "max_pool2d", "conv_relu_pool", "predict"]


# --------------------------------------------------------------------------- helpers
def _as_dask(value, name):
    """``value`` as a dask array with known chunk sizes."""
    x = da.asarray(value)
    if any(np.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                         f"first.")
    return x


def _probe(x):
    """An empty in-memory array with ``x``'s dtype and trailing shape (batch axis 0)."""
    shape = (0,) + tuple(int(s) for s in x.shape[1:]) if x.ndim else ()
    return np.empty(shape, dtype=x.dtype)


def _block_threads(num_threads):
    """The per-block thread count: 1 by default (Dask supplies the parallelism).

    Any other value is checked here, with the in-memory rule, and passed on
    unchanged, so that a negative count is counted back from the cores of
    the worker that runs the block.
    """
    if num_threads is None:
        return 1
    resolve_num_threads(num_threads)
    return num_threads


def _backend_name(backend):
    """Freeze the caller's default backend into the graph (workers have their own default)."""
    return fastconv.get_backend() if backend is None else backend


@dataclasses.dataclass(frozen=True)
class _Conv:
    """How a :func:`conv2d` result was built: what a following relu or pool fuses with."""
    input: object
    filters: np.ndarray
    bias: object
    strides: object
    padding: object
    data_format: str
    dilations: object
    groups: int
    activation: object      # None or "relu"
    backend: str
    num_threads: int
    algorithm: str
    allow_rechunk: bool


#: The attribute of a :func:`conv2d` result that holds its :class:`_Conv`.  Any other
#: Dask operation returns a new array without it, so only a direct chain fuses.
_RECIPE = "_fastconv_conv"


def _conv_recipe(x, fuse):
    """The :class:`_Conv` that built ``x`` when ``fuse`` is set, else None."""
    if not isinstance(fuse, bool):
        raise TypeError(f"fuse must be True or False; got {fuse!r}.")
    recipe = getattr(x, _RECIPE, None) if fuse and isinstance(x, da.Array) else None
    return recipe if isinstance(recipe, _Conv) else None


def _layout_axes(data_format):
    """``(H axis, W axis, C axis)`` of a 4-D array in ``data_format``."""
    return (1, 2, 3) if data_format == "NHWC" else (2, 3, 1)


def _explicit(top, bottom, left, right, data_format):
    hw = [[top, bottom], [left, right]]
    return [[0, 0], *hw, [0, 0]] if data_format == "NHWC" else [[0, 0], [0, 0], *hw]


def _first_output(c, size, OH, S, P0):
    """``A(c)``: the first output row whose window starts (clipped) at or after row ``c``."""
    if c <= 0:
        return 0
    if c >= size:
        return OH
    return min(OH, -(-(c + P0) // S))


def _block_geometry(c0, c1, size, OH, EK, S, P0, first, last):
    """``(a, b, lo, hi)`` of the block ``[c0, c1)``, or None when it must be merged."""
    a = 0 if first else _first_output(c0, size, OH, S, P0)
    b = OH if last else _first_output(c1, size, OH, S, P0)
    if b <= a:
        return None
    lo = a * S - P0
    hi = (b - 1) * S - P0 + EK - 1
    if hi < 0 or lo > size - 1:  # every window of the block lies in the padding
        return None
    return a, b, lo, hi


def _merged_blocks(chunks, size, halo, geometry):
    """Chunk bounds and per-block geometry along one axis, merging what cannot stand alone.

    ``geometry(c0, c1, first, last)`` returns a block's description, or None
    when the block ``[c0, c1)`` owns no output (or only windows that read no
    input row) and must be merged into a neighbour.  Chunks narrower than the
    halo are first merged with Dask's own rule.  Returns ``(bounds, infos)``.
    """
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) > 1 and halo > min(chunks):
        chunks = ensure_minimum_chunksize(halo, chunks) if halo < size else (size,)
    starts = [0]
    for c in chunks[:-1]:
        starts.append(starts[-1] + c)
    while True:
        bounds = starts + [size]
        infos = [geometry(bounds[j], bounds[j + 1], j == 0, j == len(starts) - 1)
                 for j in range(len(starts))]
        bad = next((j for j, info in enumerate(infos) if info is None), None)
        if bad is None:
            return bounds, infos
        if len(starts) == 1:  # pragma: no cover - the whole axis is the in-memory call
            raise AssertionError("one block owns no output")
        del starts[max(bad, 1)]  # block 0 absorbs block 1; any other joins its left


def _axis_plan(chunks, size, OH, EK, S, P0, P1):
    """Final chunks, output chunks and per-block row slices/padding along one axis.

    Returns ``(chunks, out_chunks, blocks, depth)`` where ``blocks[j]`` is
    ``(local_start, local_stop, pad_before, pad_after)`` for block ``j`` and
    ``depth`` is the one-sided halo (0 when the axis is one chunk).
    """
    def geometry(c0, c1, first, last):
        geom = _block_geometry(c0, c1, size, OH, EK, S, P0, first, last)
        if geom is None:
            return None
        a, b, lo, hi = geom
        r0, r1 = max(lo, 0), min(hi, size - 1) + 1
        return b - a, (r0 - c0, r1 - c0, max(0, -lo), max(0, hi - size + 1))

    bounds, infos = _merged_blocks(chunks, size, EK - 1, geometry)
    chunks = tuple(bounds[j + 1] - bounds[j] for j in range(len(infos)))
    if len(chunks) == 1:  # one block: the in-memory call itself
        return chunks, (OH,), [(0, size, P0, P1)], 0
    return chunks, tuple(n for n, _ in infos), [blk for _, blk in infos], EK - 1


def _plan_spatial(x, data_format, kernel, strides, dilations, padding, allow_rechunk, name):
    """Rechunk ``x`` for the window and return ``(x, out_chunks_hw, blocks_hw, depth)``."""
    h_ax, w_ax, _ = _layout_axes(data_format)
    H, W = int(x.shape[h_ax]), int(x.shape[w_ax])
    (KH, KW), (SH, SW), (DH, DW) = kernel, strides, dilations
    win = resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format)
    plans = [_axis_plan(x.chunks[h_ax], H, win.OH, (KH - 1) * DH + 1, SH, win.pad_top,
                        win.pad_bottom),
             _axis_plan(x.chunks[w_ax], W, win.OW, (KW - 1) * DW + 1, SW, win.pad_left,
                        win.pad_right)]
    new = {ax: plan[0] for ax, plan in zip((h_ax, w_ax), plans) if plan[0] != x.chunks[ax]}
    if new:
        if not allow_rechunk:
            ax, chunks = next(iter(new.items()))
            raise ValueError(
                f"{name}: the chunks of axis {ax} ({'height' if ax == h_ax else 'width'}) "
                f"{x.chunks[ax]} are too small for the window (each chunk must hold at least "
                f"the halo of effective kernel - 1 rows and own an output row); pass "
                f"allow_rechunk=True or rechunk first, e.g. x.rechunk({{{ax}: {chunks}}}).")
        x = x.rechunk(new)
    depth = {ax: (0, plan[3]) for ax, plan in zip((h_ax, w_ax), plans)}
    return x, (plans[0][1], plans[1][1]), (plans[0][2], plans[1][2]), depth


def _cut_heads(block, h_ax, w_ax, depth_h, depth_w):
    """*Copies* of a block's first ``depth_w`` columns and first ``depth_h`` rows.

    Copies, because a view would keep the whole block alive while the
    neighbours that need its head wait for their other inputs.  Either is
    None when its depth is 0.
    """
    cols = rows = None
    if depth_w:
        index = [slice(None)] * block.ndim
        index[w_ax] = slice(0, depth_w)
        cols = np.array(block[tuple(index)], copy=True)
    if depth_h:
        index = [slice(None)] * block.ndim
        index[h_ax] = slice(0, depth_h)
        rows = np.array(block[tuple(index)], copy=True)
    return cols, rows


#: The largest work array (bytes) a thread keeps from one block call for the next (see
#: ``_tuning.DASK_SCRATCH_MAX_BYTES``); a module attribute so that tests can lower it.
_SCRATCH_MAX_BYTES = _tuning.DASK_SCRATCH_MAX_BYTES

_scratch_buffers = threading.local()


def _scratch(slot, shape, dtype):
    """A C-contiguous, cache-line aligned work array this thread reuses from call to call.

    A block's joined input and its convolution output are consumed inside
    the task, so instead of fresh memory for every block (on a Dask worker,
    whose environment sets ``MALLOC_TRIM_THRESHOLD_``, every large array is
    a new mapping and its pages fault in again) each thread keeps one byte
    buffer per ``slot`` and views its prefix; the buffer grows to the
    largest block seen, up to :data:`_SCRATCH_MAX_BYTES`.  Never returned
    from a task.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    align = _tuning.OUTPUT_ALIGN_BYTES
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes + align > _SCRATCH_MAX_BYTES:
        return _ops.aligned_empty(shape, dtype)
    buf = getattr(_scratch_buffers, slot, None)
    if buf is None or buf.size < nbytes + align:
        setattr(_scratch_buffers, slot, None)          # free the smaller one first
        buf = np.empty(nbytes + align, dtype=np.uint8)
        setattr(_scratch_buffers, slot, buf)
    start = -buf.__array_interface__["data"][0] % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def _window(parts, h_ax, w_ax, rows, cols):
    """Rows ``[r0, r1)`` and columns ``[q0, q1)`` of a block joined with its neighbours' heads.

    ``parts`` is ``(block, right, below, corner)`` as :func:`_with_halo`
    passes them (the heads as :func:`_cut_heads` made them).  The result is
    C-contiguous: the block's own view when the window lies inside it and
    is contiguous, otherwise this thread's ``"window"`` scratch array (see
    :func:`_scratch`) filled with exactly the window, so the in-memory
    operation never copies its input again.  Valid until the thread's next
    call.
    """
    block, right, below, corner = parts
    (r0, r1), (q0, q1) = rows, cols
    h, w = block.shape[h_ax], block.shape[w_ax]

    def index(a0, a1, b0, b1):
        idx = [slice(None)] * block.ndim
        idx[h_ax], idx[w_ax] = slice(a0, a1), slice(b0, b1)
        return tuple(idx)

    if r1 <= h and q1 <= w:
        view = block[index(r0, r1, q0, q1)]
        if view.flags.c_contiguous:
            return view
    shape = list(block.shape)
    shape[h_ax], shape[w_ax] = r1 - r0, q1 - q0
    out = _scratch("window", shape, block.dtype)
    pieces = [(block, 0, 0)]
    if right is not None:
        pieces.append((right[0], 0, w))       # the right block's first columns, all rows
    if below is not None:
        pieces.append((below[1], h, 0))       # the lower block's first rows, all columns
    if corner is not None:
        pieces.append((corner[1], h, w))      # the lower-right block's first rows
    for part, pr, pc in pieces:
        a0, a1 = max(r0, pr), min(r1, pr + part.shape[h_ax])
        b0, b1 = max(q0, pc), min(q1, pc + part.shape[w_ax])
        if a0 < a1 and b0 < b1:
            out[index(a0 - r0, a1 - r0, b0 - q0, b1 - q0)] = \
                part[index(a0 - pr, a1 - pr, b0 - pc, b1 - pc)]
    return out


def _with_halo(func, x, h_ax, w_ax, depth_h, depth_w, *, chunks, dtype, **kwargs):
    """``func(block_plus_halo, block_id=..., **kwargs)`` on every block of ``x``.

    The same as ``map_overlap(depth={h: (0, depth_h), w: (0, depth_w)},
    boundary="none", trim=False)``, built as two layers of one task per
    block: the first cuts copies of the block's first columns and rows (see
    :func:`_cut_heads`), the second joins a block with the heads of its
    right, lower and lower-right neighbours (the corner is the head of the
    lower-right neighbour's rows) and calls ``func``.  Views into whole
    neighbouring blocks, as Dask's overlap makes, would keep those blocks
    alive until their consumer runs; with copies a worker streaming an image
    holds about one row of blocks, not more.
    """
    token = tokenize(func, x, h_ax, w_ax, depth_h, depth_w, chunks, kwargs)
    name, heads = "fastconv-halo-" + token, "fastconv-heads-" + token
    run = functools.partial(_run_with_halo, func, kwargs)
    dsk, hdsk = {}, {}
    for idx in np.ndindex(*x.numblocks):
        args = []
        for which in ([w_ax], [h_ax], [h_ax, w_ax]):
            wanted = all((depth_w if ax == w_ax else depth_h) for ax in which)
            nb = tuple(i + 1 if ax in which else i for ax, i in enumerate(idx))
            inside = all(i < n for i, n in zip(nb, x.numblocks))
            args.append((heads,) + nb if wanted and inside else None)
        if idx[h_ax] or idx[w_ax]:  # a block in row 0 and column 0 is nobody's neighbour
            hdsk[(heads,) + idx] = (_cut_heads, (x.name,) + idx, h_ax, w_ax, depth_h, depth_w)
        dsk[(name,) + idx] = (run, (x.name,) + idx, *args, idx)
    layers = dict(x.__dask_graph__().layers)
    deps = dict(x.__dask_graph__().dependencies)
    below = set(x.__dask_layers__())
    if depth_h or depth_w:
        layers[heads], deps[heads] = MaterializedLayer(hdsk), set(below)
        below.add(heads)
    layers[name], deps[name] = MaterializedLayer(dsk), below
    return da.Array(HighLevelGraph(layers, deps), name, chunks,
                    meta=np.empty((0,) * x.ndim, dtype=dtype))


def _run_with_halo(func, kwargs, block, right, below, corner, block_id):
    return func((block, right, below, corner), block_id=block_id, **kwargs)


def _window_block(parts, block_id=None, *, op, layout, rows, cols, op_kwargs):
    h_ax, w_ax, _ = _layout_axes(layout)
    r0, r1, top, bottom = rows[block_id[h_ax]]
    q0, q1, left, right = cols[block_id[w_ax]]
    x = _window(parts, h_ax, w_ax, (r0, r1), (q0, q1))
    return op(x, _explicit(top, bottom, left, right, layout), **op_kwargs)


def _map_windows(func, x, layout, out_c_chunks, blocks_hw, out_hw, depth, dtype, /, **kwargs):
    """The windowed map with the one-sided halo; ``func(block, padding, **kwargs)``."""
    h_ax, w_ax, c_ax = _layout_axes(layout)
    out_chunks = [None] * 4
    out_chunks[0], out_chunks[h_ax], out_chunks[w_ax] = x.chunks[0], out_hw[0], out_hw[1]
    out_chunks[c_ax] = out_c_chunks
    return _with_halo(_window_block, x, h_ax, w_ax, depth[h_ax][1], depth[w_ax][1],
                      chunks=tuple(out_chunks), dtype=dtype, op=func, layout=layout,
                      rows=blocks_hw[0], cols=blocks_hw[1], op_kwargs=kwargs)


# --------------------------------------------------------------------------- conv2d
def _conv_block(block, padding, *, filters, strides, data_format, dilations, groups, bias,
                activation, backend, num_threads, algorithm):
    return fastconv.conv2d(block, filters, strides, padding, data_format, dilations,
                           groups=groups, bias=bias, activation=activation, backend=backend,
                           num_threads=num_threads, algorithm=algorithm)


def conv2d(input, filters, strides=1, padding="VALID", data_format="NHWC", dilations=1, *,
           groups=1, bias=None, activation=None, backend=None, num_threads=None,
           algorithm="auto", allow_rechunk=True):
    """Lazy :func:`fastconv.conv2d` over a chunked dask array.

    The result equals ``fastconv.conv2d`` on the whole array (same formula,
    same padding rules) for any chunking of N, H and W.  Each block runs the
    in-memory convolution on its rows plus a one-sided halo of
    ``EK - 1 = (KH - 1) * DH + 1 - 1`` rows (``KW``/``DW`` along W), with
    its own explicit padding; see the module docstring for the arithmetic.

    Parameters
    ----------
    input : dask array or array_like, 4-D
        NHWC ``(N, H, W, C_in)`` (NCHW with ``data_format="NCHW"``); passed
        through ``dask.array.asarray``.  The channel axis must be one chunk.
    filters, strides, padding, data_format, dilations, groups, bias, activation, backend, \
algorithm
        As for :func:`fastconv.conv2d`; ``filters`` and ``bias`` are in-memory
        arrays stored once in the graph.  ``backend=None`` means the caller's
        default at the time of the call.
    num_threads : int, optional
        Threads per block call; default 1 (Dask supplies the parallelism).
    allow_rechunk : bool
        Merge H/W chunks smaller than the halo (or owning no output row);
        with False such chunks raise ``ValueError``.

    Returns
    -------
    dask.array.Array
        ``(N, OH, OW, C_out)`` (or NCHW), chunked like the input along N and
        by the owner rule along OH and OW; C_out is one chunk.

    Raises
    ------
    ValueError, TypeError
        Every error of :func:`fastconv.conv2d`, when the graph is built;
        ``ValueError`` when the channel axis is split over several chunks.
    """
    x = _as_dask(input, "input")
    w = np.asarray(filters)
    b = None if bias is None else np.asarray(bias)
    num_threads = _block_threads(num_threads)
    # The in-memory call on an empty batch raises fastconv's own errors and gives the shape.
    probe = fastconv.conv2d(_probe(x), w, strides, padding, data_format, dilations,
                            groups=groups, bias=b, activation=activation, backend=backend,
                            num_threads=1, algorithm=algorithm)
    data_format = check_data_format(data_format)
    recipe = _Conv(x, w, b, strides, padding, data_format, dilations, groups,
                   "relu" if check_activation(activation) else None, _backend_name(backend),
                   num_threads, algorithm, allow_rechunk)
    h_ax, w_ax, c_ax = _layout_axes(data_format)
    if len(x.chunks[c_ax]) > 1:
        raise ValueError(f"conv2d: the channel axis {c_ax} of input is split into "
                         f"{len(x.chunks[c_ax])} chunks {x.chunks[c_ax]}; a convolution sums "
                         f"over every channel, so it must be one chunk: "
                         f"x.rechunk({{{c_ax}: -1}}).")
    KH, KW = w.shape[0], w.shape[1]
    geometry = ((KH, KW), spatial_pair(strides, "strides", data_format),
                spatial_pair(dilations, "dilations", data_format))
    x, out_hw, blocks_hw, depth = _plan_spatial(x, data_format, *geometry, padding,
                                                allow_rechunk, "conv2d")
    O = probe.shape[c_ax]
    out = _map_windows(_conv_block, x, data_format, (O,), blocks_hw, out_hw, depth,
                       probe.dtype, filters=w.astype(probe.dtype, copy=False),
                       strides=strides, data_format=data_format, dilations=dilations,
                       groups=groups,
                       bias=None if b is None else b.astype(probe.dtype, copy=False),
                       activation=recipe.activation, backend=recipe.backend,
                       num_threads=num_threads, algorithm=algorithm)
    setattr(out, _RECIPE, recipe)
    return out


# --------------------------------------------------------------------------- relu
def _relu_block(block, *, backend, num_threads):
    return fastconv.relu(block, backend=backend, num_threads=num_threads)


def relu(features, *, backend=None, num_threads=None, fuse=True):
    """Lazy :func:`fastconv.relu`, ``max(features, 0)``, block by block (any chunking).

    NaN stays NaN and ``-inf`` becomes 0, as in memory; the input is never
    modified.  ``num_threads`` defaults to 1 per block.

    Parameters
    ----------
    features : dask array or array_like
    backend : str, optional
        As for :func:`fastconv.relu`.
    num_threads : int, optional
        Threads per block call; default 1.
    fuse : bool
        When ``features`` is the result of :func:`conv2d`, return that
        convolution with ``activation="relu"`` (the same values, with no
        separate ReLU chunks).  False maps :func:`fastconv.relu` over the
        blocks of ``features`` whatever built it.

    Returns
    -------
    dask.array.Array
        Same shape, chunks and dtype as ``features``.
    """
    x = _as_dask(features, "features")
    num_threads = _block_threads(num_threads)
    probe = fastconv.relu(np.empty((0,), dtype=x.dtype), backend=backend, num_threads=1)
    recipe = _conv_recipe(features, fuse)
    if recipe is not None:  # a maximum is exact: the conv's own backend gives the same bits
        return conv2d(recipe.input, recipe.filters, recipe.strides, recipe.padding,
                      recipe.data_format, recipe.dilations, groups=recipe.groups,
                      bias=recipe.bias, activation="relu", backend=recipe.backend,
                      num_threads=recipe.num_threads, algorithm=recipe.algorithm,
                      allow_rechunk=recipe.allow_rechunk)
    return x.map_blocks(_relu_block, dtype=probe.dtype,
                        meta=np.empty((0,) * x.ndim, dtype=probe.dtype),
                        backend=_backend_name(backend), num_threads=num_threads)


# --------------------------------------------------------------------------- max_pool2d
def _pool_block(block, padding, *, ksize, strides, data_format, backend, num_threads):
    return fastconv.max_pool2d(block, ksize, strides, padding, data_format, backend=backend,
                               num_threads=num_threads)


def max_pool2d(input, ksize, strides=None, padding="VALID", data_format="NHWC", *,
               backend=None, num_threads=None, allow_rechunk=True, fuse=True):
    """Lazy :func:`fastconv.max_pool2d` over a chunked dask array.

    The same plan as :func:`conv2d` (one-sided halo of ``KH - 1`` rows and
    ``KW - 1`` columns, per-block explicit padding); the channel axis may be
    chunked and keeps its chunks.  A maximum is exact, so the result equals
    the in-memory one bit for bit, NaN propagating as in memory.

    Parameters
    ----------
    input : dask array or array_like, 4-D
        NHWC (or NCHW with ``data_format="NCHW"``).
    ksize, strides, padding, data_format, backend
        As for :func:`fastconv.max_pool2d`.
    num_threads : int, optional
        Threads per block call; default 1.
    allow_rechunk : bool
        As for :func:`conv2d`.
    fuse : bool
        When ``input`` is the result of :func:`conv2d` (or of :func:`relu`
        of one) in the same ``data_format``, build the whole chain as
        :func:`conv_relu_pool` does: one windowed map whose blocks run the
        convolution, its activation and the pooling, so the convolution's
        output is never a Dask chunk.  The blocks run with the convolution's
        ``backend`` and ``num_threads`` (a maximum is exact in every backend).
        Both calls must allow rechunking.  False pools the blocks of
        ``input`` whatever built it.

    Returns
    -------
    dask.array.Array
        ``(N, OH, OW, C)`` (or NCHW).
    """
    x = _as_dask(input, "input")
    num_threads = _block_threads(num_threads)
    probe = fastconv.max_pool2d(_probe(x), ksize, strides, padding, data_format,
                                backend=backend, num_threads=1)
    data_format = check_data_format(data_format)
    recipe = _conv_recipe(input, fuse)
    if recipe is not None and recipe.data_format == data_format and allow_rechunk \
            and recipe.allow_rechunk:
        return _conv_pool(recipe, ksize, strides, padding)
    geometry = _ops.pool_geometry(ksize, strides, data_format)
    x, out_hw, blocks_hw, depth = _plan_spatial(x, data_format, *geometry, padding,
                                                allow_rechunk, "max_pool2d")
    c_ax = _layout_axes(data_format)[2]
    return _map_windows(_pool_block, x, data_format, x.chunks[c_ax], blocks_hw, out_hw,
                        depth, probe.dtype, ksize=ksize, strides=strides,
                        data_format=data_format, backend=_backend_name(backend),
                        num_threads=num_threads)


# --------------------------------------------------------------------------- fused
def _fused_axis_plan(chunks, size, conv, pool):
    """The plan of ``pool(relu(conv(.)))`` along one axis, as one windowed operation.

    ``conv`` and ``pool`` are ``(EK, S, P0, P1, out_size)`` of the two stages
    (the pool's input is the convolution's output).  Pooled output ``o``
    reads convolution rows ``[o * Sp - Pp0, o * Sp - Pp0 + Kp - 1]``, which
    read input rows from ``o * Sp * Sc - Pp0 * Sc - Pc0`` on, ``(Kp - 1) * Sc
    + EKc`` rows in all: a window of stride ``Sp * Sc``, so the owner rule
    and the one-sided halo of :func:`conv2d` apply with those numbers.  Each
    block then runs the convolution on the rows its pooling windows need,
    zero-padded only where the global input is, and the pool with the
    padding the global convolution output has (``-inf``, never counted).

    Returns ``(chunks, out_chunks, blocks, depth)`` with ``blocks[j] =
    (local_start, local_stop, conv_pads, pool_pads)``.
    """
    EKc, Sc, Pc0, Pc1, OHc = conv
    Kp, Sp, Pp0, Pp1, OHp = pool
    EK, S, P0 = (Kp - 1) * Sc + EKc, Sp * Sc, Pp0 * Sc + Pc0

    def geometry(c0, c1, first, last):
        a = 0 if first else _first_output(c0, size, OHp, S, P0)
        b = OHp if last else _first_output(c1, size, OHp, S, P0)
        if b <= a:
            return None
        p_lo, p_hi = a * Sp - Pp0, (b - 1) * Sp - Pp0 + Kp - 1    # convolution rows
        u0, u1 = max(p_lo, 0), min(p_hi, OHc - 1)
        if u0 > u1:
            return None
        lo, hi = u0 * Sc - Pc0, u1 * Sc - Pc0 + EKc - 1           # input rows
        if hi < 0 or lo > size - 1:
            return None
        r0, r1 = max(lo, 0), min(hi, size - 1) + 1
        return b - a, (r0 - c0, r1 - c0, (max(0, -lo), max(0, hi - size + 1)),
                       (u0 - p_lo, p_hi - u1))

    bounds, infos = _merged_blocks(chunks, size, EK - 1, geometry)
    chunks = tuple(bounds[j + 1] - bounds[j] for j in range(len(infos)))
    depth = 0 if len(chunks) == 1 else EK - 1
    return chunks, tuple(n for n, _ in infos), [blk for _, blk in infos], depth


#: Convolution output bytes (per image) of one band of a fused block (see
#: ``_tuning.DASK_BAND_BYTES``); a module attribute so that tests can lower it.
_BAND_BYTES = _tuning.DASK_BAND_BYTES


def _bands(size, conv, pool, row_bytes, row_pixels, algorithm):
    """Bands of a fused block's rows: ``[(start, stop, conv_pads, pool_pads, o0, o1)]``.

    The block's window (``size`` input rows; ``conv`` and ``pool`` as in
    :func:`_fused_axis_plan`, with the block's own explicit paddings) is
    split with the owner rule that splits the image into blocks, into bands
    of about :data:`_BAND_BYTES` of convolution output (``row_bytes`` per
    convolution row of ``row_pixels`` pixels): band ``k`` convolves input
    rows ``[start, stop)`` of the window with ``conv_pads`` rows of zeros
    above and below, pools that with ``pool_pads`` and gives pooled rows
    ``[o0, o1)`` of the block, each computed from the same values as
    without bands.  None when the block's whole convolution output fits
    the reusable work array (:func:`_scratch`; then one call each is
    cheaper than several), or when with ``algorithm="auto"`` a band would
    have so few output pixels that the rules (which count them) could pick
    another kernel than for the whole block.
    """
    EKc, Sc, _, _, OHc = conv
    Sp = pool[1]
    if OHc * row_bytes + _tuning.OUTPUT_ALIGN_BYTES <= _SCRATCH_MAX_BYTES:
        return None
    step = max(1, _BAND_BYTES // (row_bytes * Sp)) * Sp * Sc   # input rows per band
    if size < 2 * step:
        return None
    chunks = [step] * (size // step - 1)
    chunks.append(size - sum(chunks))            # the remainder joins the last band
    chunks, out_chunks, blocks, _ = _fused_axis_plan(tuple(chunks), size, conv, pool)
    most = max(p for p, _ in _tuning.AUTO_IM2COL_RULES)
    bands, c0, o0 = [], 0, 0
    for c, n, (l0, l1, (cp0, cp1), pool_pads) in zip(chunks, out_chunks, blocks):
        rows = (l1 - l0 + cp0 + cp1 - EKc) // Sc + 1
        if algorithm == "auto" and rows * row_pixels <= most:
            return None
        bands.append((c0 + l0, c0 + l1, (cp0, cp1), pool_pads, o0, o0 + n))
        c0, o0 = c0 + c, o0 + n
    return bands if len(bands) > 1 else None


def _banded(x, conv_pads, pool_pads, *, filters, strides, dilations, groups, bias,
            activation, ksize, pool_strides, backend, num_threads, algorithm, conv_plan,
            pool_plan):
    """The fused block of NHWC window ``x`` band by band (see :func:`_bands`), or None.

    None means one band: the caller runs the block whole.  ``conv_plan`` is
    ``(EK, S)`` of the convolution along H, ``pool_plan`` ``((PKH, PKW),
    (PSH, PSW))`` of the pooling.  Each band's convolution output is this
    thread's ``"conv"`` work array; the pool writes straight into the
    block's output.
    """
    (top, bottom), (left, right) = conv_pads[1], conv_pads[2]
    (ptop, pbottom), (pleft, pright) = pool_pads
    _, OHc, OWc, O = fastconv.output_shape((1,) + x.shape[1:], filters.shape, strides,
                                            conv_pads, "NHWC", dilations)
    (PKH, PKW), (PSH, PSW) = pool_plan
    pwin = resolve_window(OHc, OWc, PKH, PKW, PSH, PSW, 1, 1,
                          _explicit(ptop, pbottom, pleft, pright, "NHWC"), "NHWC")
    EKc, Sc = conv_plan
    bands = _bands(x.shape[1], (EKc, Sc, top, bottom, OHc), (PKH, PSH, ptop, pbottom, pwin.OH),
                   OWc * O * x.dtype.itemsize, OWc, algorithm)
    if bands is None:
        return None
    out = np.empty((x.shape[0], pwin.OH, pwin.OW, O), dtype=x.dtype)
    for n in range(x.shape[0]):
        for start, stop, (cp0, cp1), (pp0, pp1), o0, o1 in bands:
            xb = x[n:n + 1, start:stop]
            rows = (stop - start + cp0 + cp1 - EKc) // Sc + 1
            y = _scratch("conv", (1, rows, OWc, O), x.dtype)
            fastconv.conv2d(xb, filters, strides, _explicit(cp0, cp1, left, right, "NHWC"),
                            "NHWC", dilations, groups=groups, bias=bias,
                            activation=activation, out=y, backend=backend,
                            num_threads=num_threads, algorithm=algorithm)
            fastconv.max_pool2d(y, ksize, pool_strides,
                                _explicit(pp0, pp1, pleft, pright, "NHWC"), "NHWC",
                                out=out[n:n + 1, o0:o1], backend=backend,
                                num_threads=num_threads)
    return out


def _fused_block(parts, block_id=None, *, layout, rows, cols, filters, strides, dilations,
                 groups, bias, activation, ksize, pool_strides, backend, num_threads,
                 algorithm, conv_plan=None, pool_plan=None):
    h_ax, w_ax, _ = _layout_axes(layout)
    r0, r1, (top, bottom), (ptop, pbottom) = rows[block_id[h_ax]]
    q0, q1, (left, right), (pleft, pright) = cols[block_id[w_ax]]
    x = _window(parts, h_ax, w_ax, (r0, r1), (q0, q1))
    conv_pads = _explicit(top, bottom, left, right, layout)
    if layout == "NHWC" and conv_plan is not None:
        out = _banded(x, conv_pads, ((ptop, pbottom), (pleft, pright)), filters=filters,
                      strides=strides, dilations=dilations, groups=groups, bias=bias,
                      activation=activation, ksize=ksize, pool_strides=pool_strides,
                      backend=backend, num_threads=num_threads, algorithm=algorithm,
                      conv_plan=conv_plan, pool_plan=pool_plan)
        if out is not None:
            return out
    y = None  # NCHW: fastconv transposes the output itself; a fresh one then
    if layout == "NHWC":  # the convolution's output lives only until the pool has read it
        y = _scratch("conv", fastconv.output_shape(x.shape, filters.shape, strides, conv_pads,
                                                    layout, dilations), x.dtype)
    y = fastconv.conv2d(x, filters, strides, conv_pads, layout, dilations, groups=groups,
                        bias=bias, activation=activation, out=y, backend=backend,
                        num_threads=num_threads, algorithm=algorithm)
    return fastconv.max_pool2d(y, ksize, pool_strides,
                               _explicit(ptop, pbottom, pleft, pright, layout), layout,
                               backend=backend, num_threads=num_threads)


def conv_relu_pool(input, filters, ksize, pool_strides=None, strides=1, padding="VALID",
                   pool_padding="VALID", data_format="NHWC", dilations=1, *, groups=1,
                   bias=None, backend=None, num_threads=None, algorithm="auto",
                   allow_rechunk=True):
    """``max_pool2d(relu(conv2d(input, ...)), ksize, ...)`` as one windowed map.

    What the chain ``max_pool2d(relu(conv2d(...)))`` of this module builds
    (it fuses automatically; see the module docstring), under one name.
    Every block reads its input rows plus one combined halo and returns
    pooled output: no convolution output or halo strip of it ever leaves
    the task.  This is the shape to stream an image larger than the
    cluster's memory from one chunked store (``da.from_zarr``) into another
    (``.to_zarr``): the graph is read -> heads -> one task -> write, and a
    worker holds about one row of input blocks plus the few it works on.

    Parameters
    ----------
    input, filters, strides, padding, data_format, dilations, groups, bias
        As for :func:`conv2d` (``strides``, ``padding`` and ``dilations`` are
        the convolution's).
    ksize, pool_strides, pool_padding
        The ``ksize``, ``strides`` and ``padding`` of :func:`max_pool2d`
        (``pool_strides=None`` means ``ksize``).
    backend, num_threads, algorithm, allow_rechunk
        As for :func:`conv2d`.

    Returns
    -------
    dask.array.Array
        The pooled ``(N, OH, OW, C_out)`` (or NCHW).
    """
    x = _as_dask(input, "input")
    w = np.asarray(filters)
    b = None if bias is None else np.asarray(bias)
    num_threads = _block_threads(num_threads)
    conv_probe = fastconv.conv2d(_probe(x), w, strides, padding, data_format, dilations,
                                 groups=groups, bias=b, activation="relu", backend=backend,
                                 num_threads=1, algorithm=algorithm)
    recipe = _Conv(x, w, b, strides, padding, check_data_format(data_format), dilations,
                   groups, "relu", _backend_name(backend), num_threads, algorithm,
                   allow_rechunk)
    return _conv_pool(recipe, ksize, pool_strides, pool_padding, conv_probe)


def _conv_pool(conv, ksize, pool_strides, pool_padding, conv_probe=None):
    """``max_pool2d(conv2d(...))`` (``conv`` a :class:`_Conv`) as one windowed map."""
    x, w, b, data_format = conv.input, conv.filters, conv.bias, conv.data_format
    strides, padding, dilations, backend = conv.strides, conv.padding, conv.dilations, \
        conv.backend
    if conv_probe is None:
        conv_probe = fastconv.conv2d(_probe(x), w, strides, padding, data_format, dilations,
                                     groups=conv.groups, bias=b, activation=conv.activation,
                                     backend=backend, num_threads=1, algorithm=conv.algorithm)
    h_ax, w_ax, c_ax = _layout_axes(data_format)
    H, W = int(x.shape[h_ax]), int(x.shape[w_ax])
    (SH, SW), (DH, DW) = (spatial_pair(strides, "strides", data_format),
                          spatial_pair(dilations, "dilations", data_format))
    KH, KW = w.shape[0], w.shape[1]
    cwin = resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format)
    shape = [0, 0, 0, 0]  # the pool is validated on the convolution's output (batch 0)
    shape[h_ax], shape[w_ax], shape[c_ax] = cwin.OH, cwin.OW, conv_probe.shape[c_ax]
    pool_in = np.empty(shape, dtype=conv_probe.dtype)
    probe = fastconv.max_pool2d(pool_in, ksize, pool_strides, pool_padding, data_format,
                                backend=backend, num_threads=1)
    if len(x.chunks[c_ax]) > 1:
        raise ValueError(f"conv_relu_pool: the channel axis {c_ax} of input is split into "
                         f"{len(x.chunks[c_ax])} chunks {x.chunks[c_ax]}; a convolution sums "
                         f"over every channel, so it must be one chunk: "
                         f"x.rechunk({{{c_ax}: -1}}).")
    (PKH, PKW), (PSH, PSW), _ = _ops.pool_geometry(ksize, pool_strides, data_format)
    pwin = resolve_window(cwin.OH, cwin.OW, PKH, PKW, PSH, PSW, 1, 1, pool_padding,
                          data_format)
    plans = [_fused_axis_plan(x.chunks[h_ax], H,
                              ((KH - 1) * DH + 1, SH, cwin.pad_top, cwin.pad_bottom, cwin.OH),
                              (PKH, PSH, pwin.pad_top, pwin.pad_bottom, pwin.OH)),
             _fused_axis_plan(x.chunks[w_ax], W,
                              ((KW - 1) * DW + 1, SW, cwin.pad_left, cwin.pad_right, cwin.OW),
                              (PKW, PSW, pwin.pad_left, pwin.pad_right, pwin.OW))]
    new = {ax: plan[0] for ax, plan in zip((h_ax, w_ax), plans) if plan[0] != x.chunks[ax]}
    if new:
        if not conv.allow_rechunk:
            ax, chunks = next(iter(new.items()))
            raise ValueError(
                f"conv_relu_pool: the chunks of axis {ax} "
                f"({'height' if ax == h_ax else 'width'}) {x.chunks[ax]} are too small for "
                f"the combined window (each chunk must hold at least its halo and own an "
                f"output row); pass allow_rechunk=True or rechunk first, e.g. "
                f"x.rechunk({{{ax}: {chunks}}}).")
        x = x.rechunk(new)
    out_chunks = [None] * 4
    out_chunks[0], out_chunks[h_ax], out_chunks[w_ax] = x.chunks[0], plans[0][1], plans[1][1]
    out_chunks[c_ax] = (int(probe.shape[c_ax]),)
    dtype = probe.dtype
    return _with_halo(
        _fused_block, x, h_ax, w_ax, plans[0][3], plans[1][3], chunks=tuple(out_chunks),
        dtype=dtype, layout=data_format,
        rows=plans[0][2], cols=plans[1][2], filters=w.astype(dtype, copy=False),
        strides=strides, dilations=dilations, groups=conv.groups,
        bias=None if b is None else b.astype(dtype, copy=False), activation=conv.activation,
        ksize=ksize, pool_strides=pool_strides, backend=backend,
        num_threads=conv.num_threads, algorithm=conv.algorithm,
        conv_plan=((KH - 1) * DH + 1, SH), pool_plan=((PKH, PKW), (PSH, PSW)))


# --------------------------------------------------------------------------- predict
def _predict_block(block, *, model, batch_size, backend, num_threads):
    return model.predict(block, batch_size=batch_size, backend=backend,
                         num_threads=num_threads)


def predict(model, x, batch_size=32, *, backend=None, num_threads=None):
    """Lazy :meth:`fastconv.models.Sequential.predict` over the chunks of the batch axis.

    Each chunk of ``x`` along N is predicted on a worker, ``batch_size``
    examples at a time, by a copy of ``model`` sent with the graph (a model
    already used in memory pickles: its per-thread buffers are dropped).

    Parameters
    ----------
    model : fastconv.models.Sequential
    x : dask array or array_like ``(N, H, W, C)``
        Chunked along N only: every chunk holds whole images.
    batch_size : int
        Examples per forward pass inside a chunk.
    backend : str, optional
        As for :func:`conv2d`.
    num_threads : int, optional
        Threads per chunk; default 1.

    Returns
    -------
    dask.array.Array, float32
        ``(N, ...)`` with ``x``'s chunks along N and one chunk along every
        other axis.
    """
    from .models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastconv.models.Sequential; got "
                        f"{type(model).__name__}.")
    x = _as_dask(x, "x")
    batch_size = positive_int(batch_size, "batch_size")
    num_threads = _block_threads(num_threads)
    probe = model.predict(_probe(x), batch_size=batch_size, backend=backend, num_threads=1)
    split = [ax for ax in range(1, x.ndim) if len(x.chunks[ax]) > 1]
    if split:
        fix = ", ".join(f"{ax}: -1" for ax in split)
        raise ValueError(f"predict needs whole images in every chunk, but x is chunked along "
                         f"axes {split}; chunk along N only: x.rechunk({{{fix}}}).")
    out_chunks = (x.chunks[0], *((int(d),) for d in probe.shape[1:]))
    extra = {}
    if probe.ndim < x.ndim:
        extra["drop_axis"] = list(range(probe.ndim, x.ndim))
    elif probe.ndim > x.ndim:
        extra["new_axis"] = list(range(x.ndim, probe.ndim))
    return x.map_blocks(_predict_block, dtype=probe.dtype, chunks=out_chunks,
                        meta=np.empty((0,) * probe.ndim, dtype=probe.dtype), model=model,
                        batch_size=batch_size, backend=_backend_name(backend),
                        num_threads=num_threads, **extra)
