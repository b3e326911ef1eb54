"""Every tunable of fastconv's kernels, in one place.

Each constant says what it trades.  Cache sizes are read from this machine
once, at import (:func:`cache_sizes`), and every cache-derived size below is
computed from them; the kernels receive these values as arguments, so no
compiled module bakes in one machine's caches.

None of these values ever depends on the thread count, so every result is
bitwise identical for any ``num_threads``.  A different machine (other cache
sizes) may tile differently; each tiling is exact to rounding, and the
reduction order of every output element stays fixed on a given machine.
"""
import os

__all__ = ["cache_sizes", "L1D_BYTES", "L2_BYTES", "L3_BYTES"]

#: used when the machine does not say (no sysfs, no sysconf): a common x86 core
FALLBACK_CACHE_BYTES = {1: 32 << 10, 2: 512 << 10, 3: 8 << 20}

_SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
_SYSCONF_NAMES = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE",
                  3: "SC_LEVEL3_CACHE_SIZE"}


def _parse_size(text):
    """Bytes of a sysfs cache size such as ``'512K'`` or ``'32768K'``."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale


def _from_sysfs(root=_SYSFS_CACHE):
    """``{level: bytes}`` of the data/unified caches of CPU 0 in Linux's sysfs."""
    sizes = {}
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return sizes
    for entry in entries:
        if not entry.startswith("index"):
            continue
        path = os.path.join(root, entry)
        try:
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size > 0:
            sizes[level] = size
    return sizes


def _from_sysconf():
    sizes = {}
    for level, name in _SYSCONF_NAMES.items():
        try:
            value = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if value and value > 0:
            sizes[level] = int(value)
    return sizes


def cache_sizes():
    """``(L1d, L2, L3)`` bytes of one core's caches on this machine.

    Read from Linux's sysfs (``/sys/devices/system/cpu/cpu0/cache``), else
    from ``os.sysconf``; a level neither reports takes
    :data:`FALLBACK_CACHE_BYTES` (32 KiB, 512 KiB, 8 MiB).  The L3 figure is
    the whole shared cache.
    """
    found = _from_sysfs() or {}
    for level, size in _from_sysconf().items():
        found.setdefault(level, size)
    return tuple(found.get(level, FALLBACK_CACHE_BYTES[level]) for level in (1, 2, 3))


L1D_BYTES, L2_BYTES, L3_BYTES = cache_sizes()

# --------------------------------------------------------------- outputs
#: byte alignment of every output fastconv allocates (conv2d, relu, max_pool2d, im2col):
#: a cache line, so that no vector store of a pixel splits two lines (NumPy's own
#: allocations sit at 16 bytes past a line as often as not).  A caller's ``out=`` is
#: used as given.
OUTPUT_ALIGN_BYTES = 64
#: outputs smaller than this are plain ``np.empty`` arrays: finding a buffer's address
#: costs a few microseconds in Python, more than split stores cost on so few lines.
OUTPUT_ALIGN_MIN_BYTES = 16 << 10

# --------------------------------------------------------------- tiled im2col + GEMM (both backends)
#: bytes of unfolded columns per tile: at least 1 MiB, and at least the L2.  Larger tiles
#: amortize the GEMM's packing of the filters over more pixels; the GEMM reads a tile once
#: per filter panel, so a tile larger than L2 is served from L3 at little cost.  (Measured
#: on a 512 KiB-L2 machine: L2/2 tiles were 7-12% slower than 1 MiB ones on 3x3 64->64.)
IM2COL_TILE_BYTES = max(L2_BYTES, 1 << 20)
#: cap on one thread's column buffer, however large the filters (memory vs. fewer GEMMs).
IM2COL_MAX_BUFFER_BYTES = 16 << 20
#: pixels per tile: below the minimum a GEMM's n is too small to amortize packing the
#: filters; above the maximum nothing more is gained.
IM2COL_MIN_TILE, IM2COL_MAX_TILE = 64, 1024
#: a problem is cut into at least this many tasks when large enough, so that threads
#: share it and a thread slowed by another process does not hold up the others.
IM2COL_MIN_TASKS = 8
#: fewest output channels per task when the channels are split among threads.
IM2COL_MIN_O_BLOCK = 64

# --------------------------------------------------------------- direct convolution (compiled)
#: filters larger than this are walked one output-channel block at a time, so that the
#: block being applied stays in L2 (instead of cycling every block through it).
DIRECT_BLOCK_MAJOR_BYTES = L2_BYTES // 2
#: a block of filters larger than this is applied in chunks of input channels of about
#: this size, each over several output rows; a chunk shares L2 with the input rows it
#: reads.  Smaller chunks re-read the output accumulators more often.
DIRECT_CHUNK_BYTES = min(9 * 128 * 64 * 4, L2_BYTES // 2)
#: output pixels a work item covers when the filters are chunked (amortizes reloading
#: the chunk against the accumulators' reload).
DIRECT_CHUNK_MIN_PIXELS = 48
#: output rows of a work item: its border columns run as tiles of up to this many rows
#: (one pixel per row) instead of one pixel at a time.
DIRECT_BORDER_ROWS = 6

#: output bytes from which the direct kernels write with non-temporal (streaming) stores,
#: when the output is aligned to half a SIMD vector or more (a caller's ``np.empty``
#: ``out=``, 16 bytes past a page, streams as half vectors): streaming skips the
#: read-for-ownership of every line, but the output then comes back from memory, not
#: from the last-level cache, when the next operation reads it.  A quarter of the shared L3: an output that large, with
#: the input it is computed from, would take most of what the cache keeps for this core.
DIRECT_STREAM_BYTES = L3_BYTES // 4

#: "auto" (compiled backend) picks im2col + GEMM when ``groups == 1``, the output has at
#: most ``pixels`` pixels (N*OH*OW) and the filters at least ``filter`` elements
#: (KH*KW*C_in*C_out), for any ``(pixels, filter)`` pair; the direct kernel otherwise.
#: The direct kernel streams the filters once per output row, so it wins where many
#: pixels share each filter element; BLAS's blocking wins for large filters on few pixels.
AUTO_IM2COL_RULES = ((256, 1 << 16), (1024, 1 << 20))

#: "auto" (compiled backend) sends a 1x1 convolution with ``groups == 1``, at least
#: ``GEMM_1X1_MIN_CHANNELS`` input and ``GEMM_1X1_MIN_OUTPUTS`` output channels to the
#: im2col + GEMM kernel: stride 1 unpadded, the NHWC input itself is the GEMM's
#: ``(N*H*W, C_in)`` operand (no copy); strided, each tile's pixels are gathered first.
#: Its tiles are whole pixels, so two threads never write one output cache line, while
#: the direct kernel splits C_out into blocks whose items share lines.  With fewer input
#: channels the direct kernel was as fast or faster on one thread (64->64: by 15%); from
#: 256 channels in and 512 out the GEMM was 20% faster.
GEMM_1X1_MIN_CHANNELS = 128
GEMM_1X1_MIN_OUTPUTS = 16
#: multiply-adds below which the im2col + GEMM kernel runs on one thread without entering
#: a parallel region (as :data:`DIRECT_SINGLE_THREAD_WORK`).  The result is the same: the
#: tiles are fixed by the shape and each is one single-threaded GEMM whatever the count.
GEMM_SINGLE_THREAD_WORK = 1 << 21

#: multiply-adds (direct convolution) or compares (pooling) between two looks at pending
#: signals: a long call is run in chunks of about this much work, and Ctrl-C is noticed
#: between chunks.  Smaller chunks answer sooner but re-enter the thread team more often.
INTERRUPT_WORK = 1 << 27

#: operations of ``INTERRUPT_WORK`` one element costs in the memory-bound kernels (im2col,
#: col2im, the pool backward's scatter): a copied element takes about as long as this many
#: vectorized multiply-adds, so their chunks take about as long as the others'.
INTERRUPT_COPY_COST = 16

#: multiply-adds below which a direct convolution runs on one thread without entering a
#: parallel region: waking a thread team (and waiting for its slowest member on a busy
#: machine) costs more than such a call gains from a second core.  The result is the same.
DIRECT_SINGLE_THREAD_WORK = 1 << 20

# --------------------------------------------------------------- relu, pooling, im2col (compiled)
#: elements per ReLU (and ReLU-gradient) task: large enough to hide the scheduling cost,
#: small enough to balance two threads on tensors of a megabyte.
RELU_CHUNK = 32768
#: elements below which a ReLU or its gradient runs on one thread without entering a parallel region
#: (as :data:`DIRECT_SINGLE_THREAD_WORK`): a ReLU of this size takes tens of microseconds
#: on one core, about what waking a second thread costs -- and far less than waiting for
#: one whose core is busy.  The result is the same.
RELU_SINGLE_THREAD_ELEMENTS = 1 << 18
#: elements between two looks at pending signals in a ReLU (whole :data:`RELU_CHUNK`
#: tasks): each moves 8 or 16 bytes, so this is some 10-30 ms of memory traffic.
RELU_INTERRUPT_ELEMENTS = 1 << 23
#: compares (output elements x valid window taps) below which a max pooling runs on one
#: thread without entering a parallel region (same reasoning as for ReLU).
POOL_SINGLE_THREAD_WORK = 1 << 20
#: compares a dynamically scheduled chunk of pooled output rows holds at least.
POOL_CHUNK_WORK = 1 << 16
#: elements written below which im2col and col2im run on one thread: copies of this size
#: take tens of microseconds, less than waking a team.
IM2COL_SINGLE_THREAD_ELEMENTS = 1 << 18
#: gradient elements below which the max-pool backward (zero each image's gradient, then
#: add its entries) runs on one thread without entering a parallel region, as
#: :data:`IM2COL_SINGLE_THREAD_ELEMENTS`.  The result is the same.
POOL_BACKWARD_SINGLE_THREAD_ELEMENTS = 1 << 18
#: an out-of-place ReLU writing at least this many bytes uses non-temporal stores: such
#: an output would not stay in the last-level cache anyway, and streaming it skips the
#: read-for-ownership of every line.
STREAM_BYTES = L3_BYTES // 2

# --------------------------------------------------------------- OpenMP runtime
#: how long an idle OpenMP thread spins before it sleeps (GNU OpenMP's ``GOMP_SPINCOUNT``,
#: pause-loop iterations; set when fastconv loads its OpenMP kernels unless the user set
#: ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``).  The runtime's default (300000, some
#: milliseconds) lets a thread waiting at the end of a parallel region, or idle after one,
#: burn the core that the thread it waits for -- or the caller itself -- needs on a busy
#: machine.  Too short a spin costs a quiet machine instead: a thread asleep between two
#: calls from Python must be woken, which made 2-thread calls of 0.1-0.5 ms up to twice as
#: slow at 1000 (spinning a tenth of the default kept them as fast as the default).
OPENMP_SPIN_COUNT = 30000

# --------------------------------------------------------------- fastconv's thread pool
#: how long an idle worker of the compiled backend's thread pool spins (pause-loop
#: iterations, as :data:`OPENMP_SPIN_COUNT`) before it sleeps; a calling thread that ran
#: out of tasks spins a sixteenth of it for the last ones (small tasks) and then sleeps, so
#: that a worker sharing its core is not kept from finishing them.  The pool's call
#: never waits for a worker that has not started, so the spin only decides how fast an
#: idle worker joins the next call (a sleeping one must be woken) against how long it
#: burns a core another process may need; the same trade-off and value as OpenMP's.
POOL_SPIN_COUNT = OPENMP_SPIN_COUNT

# --------------------------------------------------------------- filter gradients (both backends)
#: filter taps per output channel (KH*KW*C_in) up to which a dense (``groups == 1``)
#: filter gradient runs the native kernel (vectors across output channels, each input
#: value broadcast) instead of ``im2col(x)^T @ dy``: a GEMM with so short an inner
#: dimension is far from BLAS speed, while a longer one (a 7x7 stem on RGB: 147) is
#: served better by BLAS.  Depthwise filter gradients (``groups == C_in == C_out``)
#: always run natively.
FILTER_GRAD_DENSE_MAX_TAPS = 64
#: SIMD vectors of output channels (``conv_channel_lanes`` of the backend) at most in a
#: stacked input-gradient convolution, whose channels are a block of input pixels times
#: C_in (:func:`fastconv._backward.stacked_block`)
INPUT_GRAD_STACK_MAX_VECTORS = 2
#: how many times fewer vector multiply-adds a stacked input gradient must count than the
#: per-phase convolutions to run instead of them
INPUT_GRAD_STACK_GAIN = 1.25
#: output channels per filter tap (``C_out >= this * KH*KW*C_in / groups``, with more than
#: one tap) from which the input gradient is ``col2im(dy @ w^T)``: its GEMM's inner
#: dimension is C_out and its result small, where a convolution would have few outputs
INPUT_GRAD_COL2IM_OUTPUTS_PER_TAP = 2
#: multiply-adds below which an input gradient does not stack pixels into channels and a
#: strided dense one runs ``col2im(dy @ w^T)`` (one GEMM, one fold) instead of a
#: convolution per phase: the calls' fixed costs outweigh their savings
INPUT_GRAD_SMALL_WORK = 1 << 20
#: multiply-adds per piece of output rows of a native filter gradient: the rows are
#: cut into pieces of this much work (fixed by the shapes, never by the thread count),
#: each piece's partial sums are kept, and the pieces are added in order.
FILTER_GRAD_PIECE_WORK = 1 << 20
#: at most this many pieces (fewer, larger pieces beyond): bounds the partial sums kept.
FILTER_GRAD_MAX_PIECES = 64
#: multiply-adds below which a native filter gradient runs on one thread (as
#: :data:`DIRECT_SINGLE_THREAD_WORK`).  The result is the same.
FILTER_GRAD_SINGLE_THREAD_WORK = 1 << 20

# --------------------------------------------------------------- Numba backend
#: output channels per group below which "auto" prefers the planar direct kernel; a
#: GEMM this narrow is far from BLAS speed.
NUMBA_FEW_OUTPUTS = 32
#: C_in / groups above which "direct" uses the row kernel instead of the planar one
#: (the planar kernel re-reads one plane per input channel).
NUMBA_PLANAR_MAX_CHANNELS = 16
#: elements per ReLU block of the Numba kernel (as :data:`RELU_CHUNK`).
NUMBA_RELU_BLOCK = 1 << 15
#: elementary operations (multiply-adds, compares, copies) below which a second thread
#: is not woken: waking one costs more than such a call.
NUMBA_MIN_WORK_PER_THREAD = 1 << 16
#: elementary operations below which a call runs the serial (non-``parallel``) version
#: of a kernel: no parallel region is entered at all (its launch alone costs several
#: microseconds, and on a busy machine a worker thread can stall it for milliseconds).
#: The result is the same.
NUMBA_SERIAL_WORK = 1 << 20
#: largest scratch buffer kept between calls, per Python thread (page faults of a fresh
#: buffer vs. memory held).
NUMBA_WORKSPACE_KEEP_BYTES = 32 << 20
#: fastconv.dask: the largest work array (bytes) a worker thread keeps from one block call
#: for the next -- the joined input window and the fused chain's convolution output of a
#: block up to this size are reused (no page faults per block), larger ones are allocated
#: per call.
DASK_SCRATCH_MAX_BYTES = 64 << 20
#: fastconv.dask: a fused conv -> ReLU -> pool block whose convolution output (per image)
#: would not fit the reused work array (``DASK_SCRATCH_MAX_BYTES``) runs in bands of
#: output rows of about this much convolution output each: no fresh block-sized array
#: whose pages fault in, an intermediate that stays in cache, few calls per block.
DASK_BAND_BYTES = 4 << 20
