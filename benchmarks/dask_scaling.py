"""fastconv on Dask against in-memory fastconv: conv -> relu -> pool, and predict.

Run on a quiet machine (it starts its own loopback-only LocalCluster)::

    python benchmarks/dask_scaling.py image   [--size 8192] [--chunk 1024] [--workers 2]
    python benchmarks/dask_scaling.py predict [--images 20000] [--chunk 2000] [--workers 2]
    python benchmarks/dask_scaling.py dask-image [--size 8192] [--chunk 1024] [--workers 2]

``image`` times a ``1 x SIZE x SIZE x 3`` float32 image through SAME 3x3 conv
(8 output channels, bias, ReLU fused) -> 2x2 max pool on the cluster
(``workers`` single-threaded workers) and in memory with the same total
thread count.  ``predict`` times a batch through the lesson's model.
``dask-image`` times ``dask_image.ndfilters.convolve`` on one channel of the
same image (needs ``pip install dask-image``) against fastconv.dask on that
channel.  Each figure is the best of ``--repeat`` runs after one warm-up;
the cluster's input is persisted first, so sending it is not timed, and
every timed run computes fresh keys (``dask.graph_manipulation.clone``).
"""
import argparse
import time

import numpy as np


def _best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _timed_on(client, lazy, source):
    """Compute ``lazy`` afresh (new keys downstream of the persisted ``source``) and wait."""
    import distributed
    from dask.graph_manipulation import clone

    def run():
        distributed.wait(client.persist(clone(lazy, omit=source)))
    return run


def _cluster(workers):
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return cluster, Client(cluster)


def bench_image(args):
    import dask.array as da
    import distributed
    import fastconv
    import fastconv.dask as fd

    rng = np.random.default_rng(0)
    x = rng.random((1, args.size, args.size, 3), dtype=np.float32)
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)

    def in_memory():
        y = fastconv.conv2d(x, w, padding="SAME", bias=b, activation="relu",
                            num_threads=args.workers)
        return fastconv.max_pool2d(y, 2, padding="SAME", num_threads=args.workers)

    t_mem = _best(in_memory, args.repeat)
    cluster, client = _cluster(args.workers)
    with cluster, client:
        xd = client.persist(da.from_array(x, chunks=(1, args.chunk, args.chunk, 3)))
        distributed.wait(xd)
        out = fd.max_pool2d(fd.conv2d(xd, w, padding="SAME", bias=b, activation="relu"), 2,
                            padding="SAME")
        t_dask = _best(_timed_on(client, out, xd), args.repeat)
        fused = fd.conv_relu_pool(xd, w, 2, padding="SAME", pool_padding="SAME", bias=b)
        t_fused = _best(_timed_on(client, fused, xd), args.repeat)
    print(f"image 1x{args.size}x{args.size}x3 conv3x3(8)+relu -> pool2x2: in memory "
          f"({args.workers} threads) {t_mem:.3f} s, fastconv.dask ({args.workers} workers x 1 "
          f"thread, chunks {args.chunk}) {t_dask:.3f} s, ratio {t_dask / t_mem:.2f}; "
          f"fused conv_relu_pool {t_fused:.3f} s, ratio {t_fused / t_mem:.2f}")


def bench_dask_image(args):
    import dask.array as da
    import distributed
    import fastconv.dask as fd
    from dask_image import ndfilters

    rng = np.random.default_rng(0)
    x = rng.random((args.size, args.size), dtype=np.float32)
    k = rng.standard_normal((3, 3)).astype(np.float32)
    cluster, client = _cluster(args.workers)
    with cluster, client:
        x2 = client.persist(da.from_array(x, chunks=args.chunk))
        x4 = client.persist(x2[None, :, :, None])
        distributed.wait([x2, x4])
        theirs = ndfilters.convolve(x2, k, mode="constant")
        ours = fd.conv2d(x4, k[::-1, ::-1, None, None].copy(), padding="SAME")
        t_theirs = _best(_timed_on(client, theirs, x2), args.repeat)
        t_ours = _best(_timed_on(client, ours, x4), args.repeat)
    print(f"one channel {args.size}x{args.size} 3x3: dask-image ndfilters.convolve "
          f"{t_theirs:.3f} s, fastconv.dask.conv2d {t_ours:.3f} s")


def bench_predict(args):
    import dask.array as da
    import distributed
    import fastconv.dask as fd
    from fastconv.models import Conv2D, Dense, Flatten, MaxPooling2D, Sequential

    model = Sequential([Conv2D(64, 3, activation="relu", input_shape=(28, 28, 1)),
                        MaxPooling2D(2), Conv2D(64, 3, activation="relu"), MaxPooling2D(2),
                        Flatten(), Dense(128, activation="relu"),
                        Dense(10, activation="softmax")], seed=0)
    x = np.random.default_rng(0).random((args.images, 28, 28, 1), dtype=np.float32)
    t_mem = _best(lambda: model.predict(x, num_threads=args.workers), args.repeat)
    cluster, client = _cluster(args.workers)
    with cluster, client:
        xd = client.persist(da.from_array(x, chunks=(args.chunk, 28, 28, 1)))
        distributed.wait(xd)
        out = fd.predict(model, xd)
        t_dask = _best(_timed_on(client, out, xd), args.repeat)
    print(f"predict {args.images} images (lesson model): in memory ({args.workers} threads) "
          f"{t_mem:.3f} s, fastconv.dask ({args.workers} workers, chunks {args.chunk}) "
          f"{t_dask:.3f} s, ratio {t_dask / t_mem:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("image", "predict", "dask-image"))
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.chunk is None:
        args.chunk = 2000 if args.what == "predict" else 1024
    {"image": bench_image, "predict": bench_predict, "dask-image": bench_dask_image}[args.what](args)


if __name__ == "__main__":
    main()
