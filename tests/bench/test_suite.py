"""The benchmark shapes and suites."""
from fastconv.bench import suite


def test_flops_use_two_per_multiply_add():
    c = suite.CASES["resnet_3x3"]
    assert c.flops == 2 * 8 * 56 * 56 * 64 * 3 * 3 * 64
    dw = suite.CASES["dw_3x3"]
    assert dw.flops == 2 * 8 * 56 * 56 * 128 * 3 * 3 * 1
    s2 = suite.CASES["resnet_s2"]
    assert s2.output_shape == (8, 28, 28, 128)
    assert suite.CASES["fmnist_c1"].output_shape == (256, 26, 26, 64)


def test_suites_match_the_spec():
    names = set(suite.SUITES["full"][0])
    for n in ("fmnist_c1", "fmnist_c2", "edge_1ch", "cars_c1", "cars_c2", "cars_c4", "cars_1x1",
              "resnet_3x3", "resnet_s2", "vgg_c12", "stem_7x7", "dw_3x3", "hd_rgb", "pw_1x1",
              "relu", "max_pool2d", "model:fmnist"):
        assert n in names
    assert not any(n.startswith("tiny") for n in names)
    lesson = set(suite.SUITES["lesson"][0])
    assert {"fmnist_c1", "edge_1ch", "cars_1x1", "relu", "max_pool2d", "model:fmnist"} <= lesson


def test_hd_frame_and_1x1_layer_shapes():
    hd = suite.CASES["hd_rgb"]
    assert (hd.input_shape, hd.filter_shape, hd.output_shape) == \
        ((1, 720, 1280, 3), (3, 3, 3, 8), (1, 720, 1280, 8))
    assert hd.flops == 2 * 720 * 1280 * 8 * 9 * 3 and "small_cin" in hd.tags
    pw = suite.CASES["pw_1x1"]
    assert (pw.input_shape, pw.filter_shape, pw.output_shape) == \
        ((8, 28, 28, 256), (1, 1, 256, 512), (8, 28, 28, 512))
    assert pw.flops == 2 * 8 * 28 * 28 * 512 * 256 and "compute" in pw.tags


def test_single_channel_filter_cases():
    assert suite.CASES["edge_1ch"].single_channel_filter
    assert suite.CASES["tiny_1ch"].single_channel_filter
    assert not suite.CASES["fmnist_c1"].single_channel_filter  # 64 filters
    assert not suite.CASES["relu"].single_channel_filter
