"""``fastconv demo --train``: a lesson-style convnet trained on the digits, and its picture."""
import pytest

from fastconv import cli

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
PIL_Image = pytest.importorskip("PIL.Image")


def test_demo_train_prints_the_history_and_writes_one_png(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output goes to the current directory
    assert cli.main(["demo", "--train", "--epochs", "4", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1438 training and 359 test digits" in out and "Total params: 13,706" in out
    assert "Epoch 4/4" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()
             if line.startswith("  accuracy") or line.startswith("  loss")}
    loss = [float(v) for v in lines["loss"]]
    accuracy = [float(v) for v in lines["accuracy"]]
    assert len(loss) == len(accuracy) == 4 and loss[-1] < loss[0] and accuracy[-1] > 0.8
    test_acc = float(out.split("test: loss ")[1].split("accuracy ")[1].split()[0])
    assert test_acc > 0.8
    png = tmp_path / "fastconv-train.png"
    assert "wrote fastconv-train.png" in out
    with PIL_Image.open(png) as img:
        assert img.format == "PNG" and img.width > 2 * img.height
    assert not (tmp_path / "fastconv-demo.png").exists()


def test_demo_train_is_reproducible_and_takes_out(tmp_path, capsys):
    runs = []
    for name in ("a.png", "b.png"):
        assert cli.main(["demo", "--train", "--epochs", "1", "--seed", "3", "-o",
                         str(tmp_path / name), "--backend", "numpy"]) == 0
        text = capsys.readouterr().out
        runs.append([line for line in text.splitlines() if line.startswith("  ")])
        assert (tmp_path / name).is_file()
    assert runs[0] == runs[1]


def test_demo_train_bad_options(tmp_path, capsys):
    assert cli.main(["demo", "--train", "--epochs", "0", "-o", str(tmp_path / "x.png")]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert cli.main(["demo", "--train", "--backend", "nope", "-o", str(tmp_path / "x.png")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert cli.main(["demo", "--help"]) == 0
    assert "--train" in capsys.readouterr().out
