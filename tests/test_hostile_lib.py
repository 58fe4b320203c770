"""Issue #12, library level: each failure the hostile run found, caught in one line and leaving nothing behind.

The CLI-level matrix over every mode is tests/test_hostile.py; these tests pin each fix where it lives.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fast_train_data import IMAGE_SIZE, data, one_thread  # noqa: F401 (fixtures)
from stylefusion.core.errors import ConfigError, InputImageError, ModelError, OutputError
from stylefusion.networks.released import download_released_models
from stylefusion.run.folder import plan_images
from stylefusion.training.loop import (TrainConfig, find_checkpoints, load_checkpoint, load_latest_checkpoint, train,
                                       train_paths)
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import load_model, save_model
from tests.helpers import REPO, scene


def train_config(data, out: Path, **overrides) -> TrainConfig:
    dataset, style = data
    options = dict(style_image=style, content_dataset=dataset, model_save_path=out / "model.pth", batch_size=2,
                   image_size=IMAGE_SIZE, epochs=1, max_steps=2, checkpoint_interval=0, preview_interval=0,
                   device="cpu", num_workers=0)
    options.update(overrides)
    return TrainConfig(**options)


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, relative, sorted (empty when it does not exist)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------------- 1. SIGTERM
SIGNAL_SCRIPT = """
import os, signal, sys, time
from stylefusion_cli.common import run_cli
def main(argv):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(5)
    return 0
sys.exit(run_cli(main))
"""


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_run_cli_turns_sigterm_and_sigint_into_one_line_and_128_plus_signal(name, code):
    result = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT, name], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: interrupted by {name}: stopped; what was finished is kept, nothing half-written"]


# ------------------------------------------------------------------------------------------- 2. memory
@pytest.mark.parametrize("overrides, needle", [({"image_size": 100_000}, "--image_size 100000"),
                                               ({"style_size": 100_000}, "--style_size 100000")])
def test_training_sizes_that_cannot_fit_are_refused_before_allocating(data, tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match="needs at least .* of memory, but only") as info:
        train(train_config(data, tmp_path / "out", **overrides))
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- 3. NaN model
def test_model_with_nan_weights_is_refused(tmp_path):
    network = TransformerNet()
    with torch.no_grad():
        network.res3.conv1.conv2d.weight[0, 0, 0, 0] = float("nan")
    save_model(network, tmp_path / "nan.pth")
    with pytest.raises(ModelError, match=r"NaN or infinite weights \(in res3.conv1.conv2d.weight\)"):
        load_model(tmp_path / "nan.pth")


def test_model_whose_output_overflows_is_refused(tmp_path):
    network = TransformerNet()
    with torch.no_grad():
        for module in (network.deconv3.conv2d, network.in5):
            module.weight.mul_(1e38)  # finite weights, infinite pixels
    save_model(network, tmp_path / "overflow.pth")
    with pytest.raises(ModelError, match="produces NaN or infinite pixels"):
        load_model(tmp_path / "overflow.pth")


# ------------------------------------------------------------------------------ 4. pickle warning lines
@pytest.mark.parametrize("protocol", [4, 5])
def test_plain_pickle_is_refused_without_torch_warnings(tmp_path, recwarn, protocol):
    path = tmp_path / "pickle.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(ModelError, match="not a plain weights file"):
        load_model(path)
    assert not recwarn.list, [str(w.message) for w in recwarn.list]


# ------------------------------------------------------------------------------------------ 5. full disk
def test_full_disk_at_the_first_checkpoint_is_one_line_and_leaves_nothing(data, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint_step_" in str(f) or ".checkpoint_step_" in str(f):
            # what torch's zip writer raises when the disk fills up mid-file
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3978240 vs 3978128")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "new" / "out"
    with pytest.raises(OutputError, match=r"cannot write checkpoint .*checkpoint_step_00000002.pt: ") as info:
        train(train_config(data, out, preview_interval=1))
    assert "\n" not in str(info.value) and "inline_container" not in str(info.value)
    assert tree(tmp_path) == []  # no loss log, curve, previews, checkpoint or model folder


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs (root only); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_full_disk_for_real_on_a_small_tmpfs(data, tiny_disk):
    with pytest.raises(OutputError, match="No space left on device"):
        train(train_config(data, tiny_disk / "run"))
    assert tree(tiny_disk) == []


# --------------------------------------------------------------------------------- 6. corrupt checkpoint
@pytest.fixture(scope="module")
def two_checkpoints(data, tmp_path_factory):
    """A run with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("checkpoints")
    train(train_config(data, out, checkpoint_interval=1, max_steps=2))
    return out, [p.read_bytes() for p in sorted(train_paths(train_config(data, out)).checkpoint_dir.iterdir())]


def _restore(data, two_checkpoints, tmp_path) -> tuple[TrainConfig, list[Path]]:
    source, contents = two_checkpoints
    config = train_config(data, tmp_path, checkpoint_interval=0, max_steps=3, resume=True)
    folder = train_paths(config).checkpoint_dir
    folder.mkdir(parents=True)
    paths = [folder / f"checkpoint_step_{i:08d}.pt" for i in (1, 2)]
    for path, content in zip(paths, contents):
        path.write_bytes(content)
    return config, paths


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[: len(b) // 2], "is truncated or damaged"),
    (lambda b: bytes(len(b)), "is truncated or damaged"),
    (lambda b: b"", "is empty (0 bytes)"),
])
def test_unreadable_checkpoint_is_explained_in_words(tmp_path, damage, words):
    path = tmp_path / "checkpoint_step_00000001.pt"
    torch.save({"format": "x"}, path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert words in message and "Errno" not in message and "\n" not in message


def test_corrupt_newest_checkpoint_resumes_from_the_previous_with_a_warning(data, two_checkpoints, tmp_path):
    config, (older, newest) = _restore(data, two_checkpoints, tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])
    warnings: list[str] = []
    result = train(config, warn=warnings.append)
    assert result.resumed_from == older and result.step == 3
    assert len(warnings) == 1 and "resuming from checkpoint_step_00000001.pt (step 1)" in warnings[0]
    assert "checkpoint_step_00000002.pt is truncated or damaged" in warnings[0]


def test_no_readable_checkpoint_is_one_line(data, two_checkpoints, tmp_path):
    config, paths = _restore(data, two_checkpoints, tmp_path)
    for path in paths:
        path.write_bytes(b"")
    with pytest.raises(ModelError, match="no readable checkpoint .* is empty"):
        load_latest_checkpoint(train_paths(config).checkpoint_dir)
    assert [p.name for p in find_checkpoints(train_paths(config).checkpoint_dir)] == [
        "checkpoint_step_00000002.pt", "checkpoint_step_00000001.pt"]


# ----------------------------------------------------------------------------- 7. unreadable sub-folder
def test_unreadable_sub_folder_is_reported_not_skipped_silently(tmp_path, monkeypatch):
    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    scene((16, 16)).save(root / "a.png")
    scene((16, 16)).save(root / "locked" / "b.png")
    real_scandir = os.scandir

    def scandir(path=".", *args):
        if Path(path).name == "locked":  # what a folder without read permission gives a non-root user
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    plan = plan_images(root, tmp_path / "out")
    assert [p.name for p, _ in plan.pairs] == ["a.png"]
    assert plan.unreadable == ((root / "locked", f"permission denied reading folder: {root / 'locked'}"),)
    monkeypatch.setattr(os, "scandir", lambda path=".", *args: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(path))))
    with pytest.raises(InputImageError, match="permission denied reading folder"):
        plan_images(root, tmp_path / "out")


# ------------------------------------------------------------------------------------------- 8. leftovers
def test_failed_download_leaves_no_empty_models_folder(tmp_path):
    with pytest.raises(ModelError, match="archive not found"):
        download_released_models(tmp_path / "new" / "models", str(tmp_path / "missing.zip"))
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(ModelError, match="not a zip archive"):
        download_released_models(tmp_path / "new" / "models", str(tmp_path / "junk.zip"))
    assert tree(tmp_path) == ["junk.zip"]
