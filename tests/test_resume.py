"""Exact resume: N steps, interrupt, resume to 2N equals 2N uninterrupted; checkpoints are safe and complete."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fast_train_data import IMAGE_SIZE, data, make_checks, make_dataset, make_style, one_thread  # noqa: F401 (fixtures)
from stylefusion.core.errors import ConfigError, OutputError
from stylefusion.training.loop import (CHECKPOINT_FORMAT, StopFlag, TrainConfig, find_latest_checkpoint,
                                       load_checkpoint, train, train_paths)
from stylefusion.networks.model_files import load_model, save_model
from stylefusion.networks.transformer import TransformerNet

# 9 files (8 readable + 1 broken) at batch 2: 5 steps per epoch, so N = 7 stops in the middle of epoch 1.
N = 7


def config(data, out: Path, **overrides) -> TrainConfig:
    dataset, style = data
    options = dict(style_image=style, content_dataset=dataset, model_save_path=out / "model.pth", batch_size=2,
                   image_size=IMAGE_SIZE, epochs=10, checkpoint_interval=0, preview_interval=0, device="cpu",
                   stability_weight=0.0)
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train(config(data, out, max_steps=2 * N))
    assert result.step == 2 * N and result.epoch == 2  # 14 steps = 2 epochs of 5 + 4 steps into the third
    return {"weights": load_model(result.model_path)[0].state_dict(), "log": _log(out)}


def _log(out: Path) -> list[dict[str, str]]:
    with open(out / "model_loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


def test_max_steps_then_resume_equals_uninterrupted(data, tmp_path, uninterrupted):
    first = train(config(data, tmp_path, max_steps=N))
    assert first.step == N and first.checkpoint.name == f"checkpoint_step_{N:08d}.pt"
    resumed = train(config(data, tmp_path, max_steps=2 * N, resume=True))
    assert resumed.resumed_from == first.checkpoint and resumed.step == 2 * N
    _assert_same_weights(load_model(resumed.model_path)[0].state_dict(), uninterrupted["weights"])
    log = _log(tmp_path)
    assert [r["step"] for r in log] == [str(s) for s in range(1, 2 * N + 1)]  # no duplicated or lost rows
    assert [r["total"] for r in log] == [r["total"] for r in uninterrupted["log"]]


def test_stop_request_mid_epoch_then_resume_equals_uninterrupted(data, tmp_path, uninterrupted):
    stop = StopFlag()
    stopped = train(config(data, tmp_path, max_steps=2 * N, checkpoint_interval=3),
                    lambda p: stop.request("SIGTERM") if p.step == N else None, stop)
    assert stopped.stopped and stopped.step == N and stopped.model_path is None
    # A later, longer run leaves rows beyond the checkpoint in the log: resuming must drop them.
    with open(tmp_path / "model_loss.csv", "a") as f:
        f.write(f"{N + 1},1,9,9,0,0,18\n{N + 2},1,9")
    resumed = train(config(data, tmp_path, max_steps=2 * N, checkpoint_interval=3, resume=True))
    _assert_same_weights(resumed.network.state_dict(), uninterrupted["weights"])
    assert [r["total"] for r in _log(tmp_path)] == [r["total"] for r in uninterrupted["log"]]


def test_checkpoint_is_plain_tensors_and_holds_everything_to_continue(data, tmp_path):
    result = train(config(data, tmp_path, max_steps=3, keep_checkpoints=2, checkpoint_interval=1))
    directory = train_paths(config(data, tmp_path)).checkpoint_dir
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint_step_00000002.pt",
                                                           "checkpoint_step_00000003.pt"]  # pruned, no temp files
    assert find_latest_checkpoint(directory) == result.checkpoint
    state = torch.load(result.checkpoint, weights_only=True)  # would raise on pickled Python objects
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == 3 and state["epoch"] == 0
    assert state["position"] == 6  # 3 steps of 2 images into epoch 0
    assert isinstance(state["rng"]["torch"], torch.Tensor) and isinstance(state["rng"]["numpy"], torch.Tensor)
    assert state["optimizer"]["state"] and state["skipped"].dtype == torch.int64
    assert load_checkpoint(result.checkpoint)["signature"]["style_image"] == "stripes.png"


def test_resume_refuses_changed_options_and_fresh_runs_refuse_old_checkpoints(data, tmp_path):
    train(config(data, tmp_path, max_steps=1))
    with pytest.raises(ConfigError, match="image_size=32, now 36"):
        train(config(data, tmp_path, max_steps=2, resume=True, image_size=36))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        train(config(data, tmp_path, max_steps=2))


def test_resume_without_checkpoint_and_overwriting_an_input_are_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint found"):
        train(config(data, tmp_path, resume=True))
    with pytest.raises(OutputError, match="overwrite an input"):
        train(config(data, tmp_path, model_save_path=data[1]))
    assert not any(tmp_path.iterdir())  # nothing created for a run that cannot start


def test_resume_can_extend_a_finished_run(data, tmp_path):
    finished = train(config(data, tmp_path, epochs=1))
    assert finished.step == 5 and finished.epoch == 1
    extended = train(config(data, tmp_path, epochs=2, resume=True))
    assert extended.step == 10 and extended.epoch == 2
    assert load_model(extended.model_path)[1]["steps"] == 10


def test_multi_style_resume_equals_uninterrupted(data, tmp_path):
    """Several styles (one per step, in turn): resuming at an odd step continues with the right style."""
    dataset, stripes = data
    styles = [stripes, make_checks(tmp_path / "checks.png")]
    whole = train(config(data, tmp_path / "whole", style_image=styles, max_steps=2 * N))
    first = train(config(data, tmp_path / "parts", style_image=styles, max_steps=N))
    resumed = train(config(data, tmp_path / "parts", style_image=styles, max_steps=2 * N, resume=True))
    assert resumed.resumed_from == first.checkpoint and resumed.step == 2 * N
    network, settings = load_model(resumed.model_path)
    _assert_same_weights(network.state_dict(), load_model(whole.model_path)[0].state_dict())
    assert settings["styles"] == ["stripes.png", "checks.png"] and network.in1.gamma.shape[0] == 2
    assert [r["total"] for r in _log(tmp_path / "parts")] == [r["total"] for r in _log(tmp_path / "whole")]
    with pytest.raises(ConfigError, match="style_image"):  # other styles: another training
        train(config(data, tmp_path / "parts", style_image=styles[::-1], max_steps=3 * N, resume=True))


def test_resume_past_damaged_checkpoints_keeps_the_last_two_intact_ones(data, tmp_path):
    """A cut-off newest checkpoint and a garbage file with a higher step: the resume falls back once, moves them
    aside, and the rotation afterwards keeps two good checkpoints (no warning at the next resume)."""
    train(config(data, tmp_path, max_steps=3, checkpoint_interval=1))
    directory = train_paths(config(data, tmp_path)).checkpoint_dir
    newest = directory / "checkpoint_step_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    (directory / "checkpoint_step_00000999.pt").write_bytes(b"garbage")
    warnings: list[str] = []
    resumed = train(config(data, tmp_path, max_steps=5, checkpoint_interval=1, resume=True), warn=warnings.append)
    assert resumed.resumed_from.name == "checkpoint_step_00000002.pt" and len(warnings) == 1
    assert sorted(p.name for p in directory.iterdir()) == [
        "checkpoint_step_00000003.pt.broken", "checkpoint_step_00000004.pt", "checkpoint_step_00000005.pt",
        "checkpoint_step_00000999.pt.broken"]
    again = train(config(data, tmp_path, max_steps=6, checkpoint_interval=1, resume=True), warn=warnings.append)
    assert again.resumed_from.name == "checkpoint_step_00000005.pt" and len(warnings) == 1


def test_resume_refuses_another_painting_or_photo_folder_under_the_same_names(data, tmp_path):
    """The names and the image count matched, so another painting saved as the same file name, or another photo
    folder as large, resumed silently. The checkpoint now records digests: of the style's bytes, of the names."""
    import shutil

    dataset, _ = data
    painting = make_style(tmp_path / "a" / "style.png")
    another = make_checks(tmp_path / "b" / "style.png")
    train(config(data, tmp_path / "run", style_image=painting, max_steps=1))
    with pytest.raises(ConfigError, match=r"the style image style\.png is not the one it was trained with"):
        train(config(data, tmp_path / "run", style_image=another, max_steps=2, resume=True))
    renamed = Path(shutil.copytree(dataset, tmp_path / "renamed"))
    next(renamed.rglob("img_00.jpg")).rename(renamed / "default_class" / "img_99.jpg")
    with pytest.raises(ConfigError, match=r"--content_dataset holds other files than the ones it was trained with"):
        train(config(data, tmp_path / "run", style_image=painting, content_dataset=renamed, max_steps=2,
                     resume=True))
    moved = shutil.copytree(dataset, tmp_path / "moved")  # the same photos elsewhere: the same relative names
    assert train(config(data, tmp_path / "run", style_image=painting, content_dataset=moved, max_steps=2,
                        resume=True)).step == 2


def test_checkpoints_without_digests_still_resume(data, tmp_path):
    """Checkpoints written before the digests were recorded resume (nothing to compare them with)."""
    first = train(config(data, tmp_path, max_steps=1))
    state = torch.load(first.checkpoint, weights_only=True)
    for key in ("style_digest", "dataset_digest"):
        del state["signature"][key]
    torch.save(state, first.checkpoint)
    assert train(config(data, tmp_path, max_steps=2, resume=True)).step == 2


def test_resume_replaces_only_a_model_file_of_its_own_run(data, tmp_path):
    """--resume with another run's --checkpoint_dir replaced an unrelated model at --model_save_path silently;
    without --resume such a file is protected. The run id in the checkpoints' and the model's settings tells."""
    train(config(data, tmp_path / "full", max_steps=2))
    precious = tmp_path / "in" / "precious.pth"
    precious.parent.mkdir()
    save_model(TransformerNet(), precious, {"style_image": "udnie.jpg"})
    before = precious.read_bytes()
    checkpoints = train_paths(config(data, tmp_path / "full")).checkpoint_dir
    with pytest.raises(OutputError, match=r"precious\.pth exists and was not written by the run in .*full.*: resuming "
                                          r"would replace it"):
        train(config(data, tmp_path / "in", model_save_path=precious, checkpoint_dir=checkpoints, max_steps=3,
                     resume=True))
    assert precious.read_bytes() == before and sorted(p.name for p in precious.parent.iterdir()) == ["precious.pth"]
    resumed = train(config(data, tmp_path / "full", max_steps=3, resume=True))  # its own model: replaced
    assert load_model(resumed.model_path)[1]["steps"] == 3


def test_a_checkpoint_without_a_run_id_replaces_a_model_of_the_same_settings(data, tmp_path):
    """Checkpoints and models written before run ids: the model's run settings must match the checkpoint's."""
    first = train(config(data, tmp_path, max_steps=1))
    for path in (first.checkpoint, first.model_path):
        state = torch.load(path, weights_only=True)
        del state["settings"]["run_id"]
        torch.save(state, path)
    assert train(config(data, tmp_path, max_steps=2, resume=True)).step == 2


def test_resume_with_the_epochs_used_up_says_so(data, tmp_path):
    """A resume with every --epochs done saved the model "after 5 steps" with no word of why none was trained."""
    assert train(config(data, tmp_path, epochs=1)).step == 5
    notes: list[str] = []
    assert train(config(data, tmp_path, epochs=1, max_steps=8, resume=True), note=notes.append).step == 5
    assert notes == ["the checkpoint is at step 5, the end of --epochs 1: no step is trained; the model is saved from "
                     "it (raise --epochs to train on)"]


def test_resume_records_the_pretrained_model_the_run_started_from(data, tmp_path):
    """A resume ignores --pretrained_model_path (the checkpoint's weights go on), so it records the checkpointed
    run's starting model, not the one given (said in a note), nor none when none is given."""
    start, other = tmp_path / "start.pth", tmp_path / "other.pth"
    save_model(TransformerNet(), start)
    save_model(TransformerNet(), other)
    train(config(data, tmp_path / "run", pretrained_model_path=start, max_steps=1))
    notes: list[str] = []
    resumed = train(config(data, tmp_path / "run", pretrained_model_path=other, max_steps=2, resume=True),
                    note=notes.append)
    assert notes == [f"--pretrained_model_path {other} is ignored: a resumed run continues from its checkpoint, "
                     "which started from start.pth"]
    assert load_model(resumed.model_path)[1]["pretrained_model"] == "start.pth"
    notes.clear()
    again = train(config(data, tmp_path / "run", max_steps=3, resume=True), note=notes.append)
    assert notes == [] and load_model(again.model_path)[1]["pretrained_model"] == "start.pth"
