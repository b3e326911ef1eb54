"""The public surface: dtypes, layouts, shapes, backends, threads, configuration."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _threads


def test_result_has_input_dtype_and_filters_are_cast(rng):
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    w64 = rng.standard_normal((3, 3, 2, 3))
    y = fastconv.conv2d(x, w64, 1, "SAME", bias=[1, 2, 3])
    assert y.dtype == np.float32
    expected = fastconv.conv2d(x, w64.astype(np.float32), 1, "SAME",
                               bias=np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(y, expected)
    y64 = fastconv.conv2d(x.astype(np.float64), w64.astype(np.float32), 1, "SAME")
    assert y64.dtype == np.float64
    w_int = np.ones((3, 3, 2, 3), dtype=np.int32)
    np.testing.assert_array_equal(fastconv.conv2d(x, w_int, 1, "SAME"),
                                  fastconv.conv2d(x, w_int.astype(np.float32), 1, "SAME"))


def test_any_memory_order_and_array_likes(rng):
    x = rng.standard_normal((2, 6, 7, 3))
    w = rng.standard_normal((2, 2, 3, 4))
    expected = fastconv.conv2d(x, w, 1, "SAME")
    np.testing.assert_array_equal(fastconv.conv2d(np.asfortranarray(x), w, 1, "SAME"), expected)
    big = np.zeros((2, 12, 7, 6))
    big[:, ::2, :, ::2] = x
    np.testing.assert_array_equal(fastconv.conv2d(big[:, ::2, :, ::2], w, 1, "SAME"), expected)
    np.testing.assert_array_equal(fastconv.conv2d(x.tolist(), w.tolist(), 1, "SAME"), expected)


def test_empty_batch_returns_empty_result():
    x = np.zeros((0, 8, 8, 3), np.float32)
    y = fastconv.conv2d(x, np.zeros((3, 3, 3, 5), np.float32), 2, "SAME")
    assert y.shape == (0, 4, 4, 5) and y.dtype == np.float32
    assert fastconv.max_pool2d(x, 2).shape == (0, 4, 4, 3)
    assert fastconv.relu(x).shape == x.shape
    assert fastconv.im2col(x, 3).shape == (0, 27)
    assert fastconv.conv2d(np.zeros((0, 3, 8, 8)), np.zeros((3, 3, 3, 5)), 1, "SAME",
                           data_format="NCHW").shape == (0, 5, 8, 8)


@pytest.mark.parametrize("H,K,S,expected_out,expected_pads", [
    (5, 3, 2, 3, [1, 1]),
    (6, 3, 2, 3, [0, 1]),    # odd total padding: the extra pixel goes to the bottom
    (7, 2, 1, 7, [0, 1]),
    (4, 1, 3, 2, [0, 0]),
    (10, 4, 3, 4, [1, 2]),
])
def test_same_padding_rule(tf, H, K, S, expected_out, expected_pads):
    # The rule is TensorFlow's: OH = ceil(H / S), the padding split with the odd pixel at the end.
    shape = fastconv.output_shape((1, H, H, 2), K, S, "SAME", out_channels=3)
    assert shape == (1, expected_out, expected_out, 3)
    assert fastconv.explicit_padding((1, H, H, 2), K, S, "SAME") == [[0, 0], expected_pads,
                                                                    expected_pads, [0, 0]]
    x = np.ones((1, H, H, 2), np.float32)
    w = np.ones((K, K, 2, 3), np.float32)
    assert tuple(tf.nn.conv2d(x, w, S, "SAME").shape) == shape
    explicit = fastconv.explicit_padding((1, H, H, 2), K, S, "SAME")
    assert tuple(tf.nn.conv2d(x, w, S, explicit).shape) == shape
    np.testing.assert_array_equal(tf.nn.conv2d(x, w, S, explicit).numpy(),
                                  tf.nn.conv2d(x, w, S, "SAME").numpy())


def test_output_shape_nchw_valid_and_filter_shape():
    assert fastconv.output_shape((2, 3, 28, 28), (3, 3, 3, 64), 1, "VALID",
                                 data_format="NCHW") == (2, 64, 26, 26)
    assert fastconv.output_shape((2, 9, 9, 4), 3, 1, "VALID", dilations=2) == (2, 5, 5, 4)
    assert fastconv.explicit_padding((2, 4, 9, 9), 3, 1, "SAME", data_format="NCHW") == \
        [[0, 0], [0, 0], [1, 1], [1, 1]]


def test_backends_lists_each_with_reason():
    statuses = fastconv.backends()
    names = [s.name for s in statuses]
    assert names == ["cython", "numba", "numpy"]
    for s in statuses:
        assert s.available == (s.reason == "")
    numpy_status = statuses[2]
    assert numpy_status.available
    assert fastconv.available_backends()[-1] == "numpy"


def test_unavailable_backend_says_why(monkeypatch):
    from fastconv import _backends
    monkeypatch.setitem(_backends._loaded, "numba", (None, "Numba is not installed (pip install numba)"))
    status = {s.name: s for s in fastconv.backends()}["numba"]
    assert not status.available and "not installed" in status.reason
    with pytest.raises(fastconv.BackendUnavailableError, match="'numba' is not available: Numba is not installed"):
        fastconv.relu(np.zeros(3), backend="numba")


def test_missing_numba_is_reported_in_a_fresh_process():
    code = ("import sys; sys.modules['numba'] = None\n"
            "import fastconv\n"
            "s = {b.name: b for b in fastconv.backends()}['numba']\n"
            "print(s.available, s.reason)\n"
            "print(fastconv.relu([-1.0, 2.0]).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0] == "False Numba is not installed (pip install numba)"
    assert out[1] == "[0.0, 2.0]"


def test_set_backend_and_use_backend(monkeypatch):
    calls = []
    from fastconv import _backends
    from fastconv._backends import reference as _reference

    class Spy:
        def __getattr__(self, name):
            def f(*args):
                calls.append(name)
                return getattr(_reference, name)(*args)
            return f

    monkeypatch.setitem(_backends._loaded, "numba", (Spy(), ""))
    assert fastconv.get_backend() == "auto"
    with fastconv.use_backend("numba"):
        assert fastconv.get_backend() == "numba"
        fastconv.relu([1.0])
        fastconv.relu([1.0], backend="numpy")
    assert calls == ["relu"]
    fastconv.set_backend("numba")
    try:
        fastconv.max_pool2d(np.zeros((1, 2, 2, 1)), 2)
        assert calls == ["relu", "max_pool2d"]
    finally:
        fastconv.set_backend(None)
    monkeypatch.setenv("FASTCONV_BACKEND", "numpy")
    assert fastconv.get_backend() == "numpy"


def test_auto_picks_the_fastest_available():
    from fastconv import _backends
    name, _ = _backends.resolve("auto")
    assert name == fastconv.available_backends()[0]


def test_thread_count_rules(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("FASTCONV_NUM_THREADS", raising=False)
    assert fastconv.get_num_threads() == cores
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "3")
    assert fastconv.get_num_threads() == 3
    fastconv.set_num_threads(-1)
    try:
        assert fastconv.get_num_threads() == cores
        fastconv.set_num_threads(-cores - 5)
        assert fastconv.get_num_threads() == 1
        fastconv.set_num_threads(5)
        assert fastconv.get_num_threads() == 5
    finally:
        fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() == 3
    assert _threads.resolve_num_threads(2) == 2
    assert _threads.resolve_num_threads(-1) == cores


def test_num_threads_reaches_the_backend(monkeypatch):
    seen = []
    from fastconv import _backends
    from fastconv._backends import reference as _reference

    def relu(x, out, n):
        seen.append(n)
        _reference.relu(x, out, n)

    class Recorder:
        def __getattr__(self, name):
            return relu if name == "relu" else getattr(_reference, name)

    monkeypatch.setitem(_backends._loaded, "numba", (Recorder(), ""))
    fastconv.relu([1.0], backend="numba", num_threads=3)
    fastconv.relu([1.0], backend="numba", num_threads=-1)
    assert seen == [3, len(os.sched_getaffinity(0))]


def test_show_config_reports_backends_simd_and_threads(capsys):
    fastconv.show_config()
    text = capsys.readouterr().out
    assert f"fastconv:          {fastconv.__version__}" in text
    for name in ("cython", "numba", "numpy"):
        assert f"  {name} " in text
    cfg = fastconv.config()
    assert cfg["threads"] == fastconv.get_num_threads()
    if cfg["backends"]["cython"]["available"]:
        assert cfg["backends"]["cython"]["openmp"] in (True, False)
        assert cfg["backends"]["cython"]["simd"] in ("avx512", "avx2", "generic")


def test_relu_semantics():
    x = np.array([np.nan, -np.inf, -1.0, -0.0, 0.5, np.inf], np.float32)
    y = fastconv.relu(x)
    assert np.isnan(y[0])
    np.testing.assert_array_equal(y[1:], [0, 0, 0, 0.5, np.inf])


def test_conv2d_is_cross_correlation():
    x = np.zeros((1, 3, 3, 1))
    x[0, 0, 0, 0] = 1.0            # a single impulse at the top-left corner
    w = np.arange(9.0).reshape(3, 3, 1, 1)
    y = fastconv.conv2d(x, w, 1, "SAME")
    # correlation: out[1, 1] sees the impulse through the kernel's top-left tap w[0, 0]
    assert y[0, 1, 1, 0] == w[0, 0, 0, 0] and y[0, 0, 0, 0] == w[1, 1, 0, 0]


def test_required_backends_are_available():
    """CI sets FASTCONV_REQUIRE_BACKENDS so that a failed build cannot pass unnoticed."""
    required = [b for b in os.environ.get("FASTCONV_REQUIRE_BACKENDS", "").split(",") if b]
    statuses = {s.name: s for s in fastconv.backends()}
    for name in required:
        assert statuses[name].available, f"{name}: {statuses[name].reason}"


def test_warmup_prepares_jit_backends():
    done = fastconv.warmup()
    assert ("numba" in done) == ("numba" in fastconv.available_backends())
    for timings in done.values():
        assert set(timings) == {"float32", "float64"}
