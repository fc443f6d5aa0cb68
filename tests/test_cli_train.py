"""train, evaluate, predict and plot through the command line, on a tiny image folder."""

from importlib.util import find_spec

import pytest
import yaml
from click.testing import CliRunner
from conftest import require_engine
from test_train import SPEC

from cnnbuild.checkpoint import load_checkpoint
from cnnbuild.cli import main

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output


def test_train_evaluate_predict_end_to_end(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    result, output = run(
        "train", spec_file, "--epochs", 3, "--data-dir", image_folder, "--out", out
    )
    assert result.exit_code == 0, output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["epoch", "loss", "train", "acc", "test", "acc", "time"]
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    drawn = ["curves.png"] if find_spec("matplotlib") else []
    for name in ("last.npz", "best.npz", "history.csv", "config.yaml", *drawn):
        assert (out / name).exists(), name

    result, output = run("evaluate", out / "best.npz")
    assert result.exit_code == 0, output
    assert "accuracy" in output and "0_top" in output and "confusion matrix" in output

    image = next((image_folder / "test" / "1_middle").glob("*.png"))
    result, output = run("predict", out / "best.npz", image, "--index", 0, "--top-k", 2)
    assert result.exit_code == 0, output
    assert "test[0]: predicted" in output and f"{image}: predicted" in output
    assert output.count("%") == 4


@pytest.mark.usefixtures("without_curves")
def test_resume_continues_to_the_new_epoch_count(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    run("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    result, output = run("train", spec_file, "--epochs", 2, "--resume", out / "last.npz")
    assert result.exit_code == 0, output
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["epoch"] == 2 and len(meta["history"]) == 2


@pytest.mark.usefixtures("without_curves")
def test_a_run_folder_is_never_overwritten(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    run("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    result, output = run(
        "train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out
    )
    assert result.exit_code == 2 and "already holds files of another run" in output


@pytest.mark.usefixtures("without_curves")
def test_resume_refuses_to_change_the_saved_settings(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    run("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    result, output = run("train", spec_file, "--resume", out / "last.npz", "--lr", 0.1)
    assert result.exit_code == 2 and "--lr cannot change when resuming" in output


@pytest.mark.usefixtures("without_curves")
def test_predict_index_out_of_range_is_a_clear_error(tmp_path, spec_file, image_folder):
    out = tmp_path / "run"
    run("train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out)
    result, output = run("predict", out / "last.npz", "--index", 48)
    assert result.exit_code == 2 and "out of range" in output and "Traceback" not in output


def test_predict_show_writes_the_image_and_plot_draws_the_curves(
    tmp_path, spec_file, image_folder, monkeypatch
):
    out = tmp_path / "run"
    run("train", spec_file, "--epochs", 2, "--data-dir", image_folder, "--out", out)
    monkeypatch.chdir(tmp_path)
    result, output = run("predict", out / "last.npz", "--index", 3, "--show")
    assert result.exit_code == 0, output
    with Image.open(tmp_path / "test_3.png") as shown:
        assert shown.size == (256, 256)
    pytest.importorskip("matplotlib")
    (out / "curves.png").unlink(missing_ok=True)
    result, output = run("plot", out)
    assert result.exit_code == 0, output
    with Image.open(out / "curves.png") as curves:
        assert curves.size[0] > curves.size[1] > 100


@pytest.mark.usefixtures("without_curves")
@pytest.mark.parametrize("engine", ["numpy", "fast"])
def test_a_run_records_its_engine_and_resumes_on_it(tmp_path, spec_file, image_folder, engine):
    """auto resolves when training starts; config.yaml and the checkpoints name the engine,
    and --resume continues on it (bit for bit), unless --engine says otherwise."""
    require_engine(engine)
    out = tmp_path / "run"
    result, output = run(
        "train", spec_file, "--epochs", 1, "--data-dir", image_folder, "--out", out,
        "--engine", engine,
    )  # fmt: skip
    assert result.exit_code == 0, output
    assert f"with the {engine} engine" in output
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["engine"] == engine
    result, output = run("train", spec_file, "--epochs", 2, "--resume", out / "last.npz")
    assert result.exit_code == 0, output
    assert f"with the {engine} engine" in output
    other = {"numpy": "fast", "fast": "numpy"}[engine]
    require_engine(other)
    result, output = run(
        "train", spec_file, "--epochs", 3, "--resume", out / "last.npz", "--engine", other
    )
    assert result.exit_code == 0, output
    assert f"with the {other} engine" in output
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["config"]["engine"] == other and meta["epoch"] == 3
