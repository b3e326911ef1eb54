"""The ``fastconv demo`` command, run through the lead's CLI entry point."""
import numpy as np
import pytest

from fastconv import cli, kernels, viz

pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")


def test_demo_defaults_write_the_four_panel_png(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output goes to the current directory
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "fastconv-demo.png"
    with PIL_Image.open(png) as img:
        assert img.format == "PNG" and img.width > 2.5 * img.height
    H, W = viz.load_image("car").shape
    assert f"(1, {H}, {W}, 1)" in out and f"(1, {H // 2}, {W // 2}, 1)" in out
    for step in ("filter", "detect", "condense", " ms"):
        assert step in out


def test_demo_to_a_chosen_file_with_a_user_image_and_npy_kernel(tmp_path, capsys):
    image = (np.indices((30, 44)).sum(axis=0) % 7 * 36).astype(np.uint8)
    PIL_Image.fromarray(image, mode="L").save(tmp_path / "in.png")
    np.save(tmp_path / "k.npy", np.array([[1.0, -1.0]]))
    out = tmp_path / "sub.png"
    argv = ["demo", str(tmp_path / "in.png"), "--kernel", str(tmp_path / "k.npy"), "--out",
            str(out), "--repeat", "1", "--show-kernel", "--backend", "numpy"]
    assert cli.main(argv) == 0
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "(1, 30, 44, 1)" in printed and "(1, 15, 22, 1)" in printed and "1x2" in printed


@pytest.mark.parametrize("name", ["sobel_vertical", "blur"])
def test_demo_named_kernels_and_size(tmp_path, name, capsys):
    out = tmp_path / f"{name}.png"
    assert cli.main(["demo", "shapes", "-k", name, "-o", str(out), "--size", "40x60",
                     "--pool", "3", "--repeat", "0"]) == 0
    assert out.is_file()
    assert "(1, 13, 20, 1)" in capsys.readouterr().out  # 40x60 pooled 3x3, VALID


def test_demo_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert cli.main(["demo", "--kernel", "nope", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "edge" in err and "sobel_horizontal" in err
    assert cli.main(["demo", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert cli.main(["demo", "--size", "big", "--out", str(tmp_path / "x.png")]) == 2
    assert "--size" in capsys.readouterr().err
    assert cli.main(["demo", "--no-such-option"]) == 2
    assert not (tmp_path / "x.png").exists()


def test_demo_help_and_kernel_list(capsys):
    assert cli.main(["demo", "--help"]) == 0
    assert "--kernel" in capsys.readouterr().out
    assert cli.main(["demo", "--list-kernels"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in kernels.names())
