"""fast_style_transfer.py --mode train as a user runs it: bad input gives one line and a non-zero exit; a short
run writes the model; SIGINT to the whole process group (Ctrl-C) stops with a checkpoint that --resume continues."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fast_train_data import IMAGE_SIZE, make_dataset, make_style
from stylefusion.networks.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "fast_style_transfer.py", "--mode", "train", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_train")
    (root / "empty").mkdir()
    (root / "junk").mkdir()
    (root / "junk" / "a.jpg").write_bytes(b"not an image")
    (root / "junk" / "b.png").write_bytes(b"")
    (root / "a_file").write_text("x")
    torch.save({"fc.weight": torch.zeros(2, 2)}, root / "other_arch.pth")
    Image.new("RGB", (1000, 16), (200, 40, 40)).save(root / "strip.png")  # 62:1, 4 px high at --style_size 256
    return {"root": root, "dataset": make_dataset(root / "dataset"), "style": make_style(root / "stripes.png")}


def _args(data: dict[str, Path], out: Path, **overrides: str) -> list[str]:
    options = {"--style_image": str(data["style"]), "--content_dataset": str(data["dataset"]),
               "--model_save_path": str(out / "m.pth"), "--image_size": str(IMAGE_SIZE), "--batch_size": "2",
               "--device": "cpu", "--num_workers": "0", "--preview_interval": "0"}
    options.update(overrides)
    return [item for key, value in options.items() if value is not None for item in (key, value)]


# Each case is a fresh interpreter (~2 s of imports), so the matrix holds the cases the brief names; the library
# tests cover the rest (missing dataset folder, overwriting an input, --resume without a checkpoint, ...).
@pytest.mark.parametrize("overrides, message", [
    ({"--content_dataset": "{root}/empty"}, "no image files"),
    ({"--content_dataset": "{root}/junk"}, "none of the 2 image files"),
    ({"--style_image": "{root}/missing.jpg"}, "image not found"),
    ({"--style_image": None}, "needs --style_image"),
    ({"--batch_size": "0"}, "--batch_size"),
    ({"--image_size": "16"}, "at least 32"),
    ({"--style_image": "{root}/strip.png", "--style_size": "256"}, r"too thin .* give --style_size 2000"),
    ({"--pretrained_model_path": "{root}/other_arch.pth"}, "another architecture"),
    ({"--model_save_path": "{root}/a_file/m.pth"}, "output directory is a file"),
    ({"--model_save_path": "{root}/dataset/out/m.pth"}, "inside --content_dataset"),
])
def test_bad_input_one_line_no_traceback(data, tmp_path, overrides, message):
    args = _args(data, tmp_path, **{k: v.format(root=data["root"]) if v else v for k, v in overrides.items()})
    proc = run(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "m.pth").exists()


def test_existing_model_is_not_replaced(data, tmp_path):
    # Training into the path of a finished model (the shipped ones, or hours of one's own) refuses before any work.
    (tmp_path / "m.pth").write_bytes(b"a finished model")
    proc = run(*_args(data, tmp_path, **{"--max_steps": "1"}))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'm.pth'} exists and training would replace it: give another --model_save_path, remove "
        f"it first, or --resume to continue the run that wrote it"]
    assert (tmp_path / "m.pth").read_bytes() == b"a finished model"
    assert not (tmp_path / "m_checkpoints").exists()


def test_design_command_without_pretrained_model_suggests_download():
    proc = run("--style_image", "./data/udnie.jpg", "--content_dataset", "data/train2014", "--model_save_path",
               "./models/new_model.pth", "--pretrained_model_path", "./models/no_such_udnie.pth", "--epochs", "10")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: pretrained model not found: models/no_such_udnie.pth (fetch the released models with --mode "
        "download, or leave out --pretrained_model_path to train from scratch)"]


def test_short_run_writes_model_and_reports(data, tmp_path):
    # 5 steps of 2 = one epoch of the 9 files, so the unreadable one is met.
    proc = run(*_args(data, tmp_path, **{"--max_steps": "5", "--preview_interval": "3"}))
    assert proc.returncode == 0, proc.stderr
    assert "saved model to" in proc.stderr and "5/5" in proc.stderr and "img/s" in proc.stderr
    assert "skipped 1 unreadable image file(s)" in proc.stderr and "broken.jpg" in proc.stderr
    net, settings = load_model(tmp_path / "m.pth")
    assert settings["steps"] == 5 and settings["style_image"] == "stripes.png"
    assert sorted(p.name for p in (tmp_path / "m_previews").iterdir()) == ["step_00000003.jpg", "step_00000005.jpg"]


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(data, tmp_path):
    # Ctrl-C in a terminal reaches the whole process group, data-loading workers included.
    args = _args(data, tmp_path, **{"--max_steps": "200", "--num_workers": "1"})
    proc = subprocess.Popen([sys.executable, "fast_style_transfer.py", "--mode", "train", *args], cwd=REPO, env=ENV,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    seen = ""
    while "img/s" not in seen and time.monotonic() < deadline:  # wait for the first training step
        seen += proc.stderr.read(1)
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=90)
    stderr = seen + rest
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped at step" in stderr and "--resume" in stderr
    checkpoints = list((tmp_path / "m_checkpoints").glob("checkpoint_step_*.pt"))
    assert len(checkpoints) == 1 and not (tmp_path / "m.pth").exists()
    stopped_at = int(checkpoints[0].stem.split("_")[-1])

    resumed = run(*_args(data, tmp_path, **{"--max_steps": str(stopped_at + 2)}), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert load_model(tmp_path / "m.pth")[1]["steps"] == stopped_at + 2


def test_train_defaults_come_from_train_config():
    import dataclasses

    import fast_style_transfer
    from stylefusion.training.loop import TrainConfig

    parser = fast_style_transfer.build_parser()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in ("epochs", "image_size", "lr", "content_weight", "style_weight", "tv_weight", "stability_weight",
                 "content_layers", "style_layers", "vgg_weights", "checkpoint_interval", "preview_interval"):
        assert parser.get_default(name) == defaults[name], name


@pytest.mark.parametrize("name", ["m_loss.png", "m_loss.csv", "m_previews/step_00000001.jpg"])
def test_a_style_image_at_a_by_product_name_is_refused_in_one_line(data, tmp_path, name):
    # The run's loss curve, loss log and previews are named after the model: a style image there was replaced.
    style = tmp_path / name
    style.parent.mkdir(exist_ok=True)
    style.write_bytes(data["style"].read_bytes())
    proc = run(*_args(data, tmp_path, **{"--style_image": str(style), "--max_steps": "1", "--preview_interval": "1"}))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: refusing to overwrite an input file: {style} is where "
                                                   "this run writes its "), proc.stderr
    assert style.read_bytes() == data["style"].read_bytes()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == \
        sorted({name, *([name.split("/")[0]] if "/" in name else [])})


def test_resume_with_another_lr_and_batch_size_says_so_in_one_note(data, tmp_path):
    first = run(*_args(data, tmp_path, **{"--max_steps": "1", "--batch_size": "1"}))
    assert first.returncode == 0, first.stderr
    (tmp_path / "m.pth").unlink()
    resumed = run(*_args(data, tmp_path, **{"--max_steps": "2", "--batch_size": "3", "--lr": "0.1"}), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    notes = [line for line in resumed.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: resuming with --lr 0.1 and --batch_size 3; the checkpoint was trained with lr 0.001, "
                     "batch_size 1"], resumed.stderr
    assert resumed.stderr.index("note:") < resumed.stderr.index("saved model to")
    settings = load_model(tmp_path / "m.pth")[1]
    assert settings["steps"] == 2 and settings["lr"] == 0.1 and settings["batch_size"] == 3


def test_resume_with_max_steps_already_reached_says_so(data, tmp_path):
    """--resume --max_steps 1 after 2 steps rewrote the model saying "after 2 steps" and nothing of the cap."""
    first = run(*_args(data, tmp_path, **{"--max_steps": "2"}))
    assert first.returncode == 0, first.stderr
    (tmp_path / "m.pth").unlink()
    resumed = run(*_args(data, tmp_path, **{"--max_steps": "1"}), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    notes = [line for line in resumed.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: the checkpoint is at step 2, at or past --max_steps 1: no step is trained; the model is "
                     "saved from it"], resumed.stderr
    assert load_model(tmp_path / "m.pth")[1]["steps"] == 2
