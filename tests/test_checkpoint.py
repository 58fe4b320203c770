"""training/checkpoint.py and core/losslog.py: TrainState round trip, checkpoint names/pruning, the loss-log CSV
writer."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from stylefusion.training.checkpoint import (CHECKPOINT_FORMAT, TrainState, checkpoint_file, find_checkpoints,
                                             load_latest_checkpoint, prune_checkpoints, rng_state, save_checkpoint,
                                             set_rng_state)
from stylefusion.core.losslog import LossLog


def test_train_state_round_trips_through_a_checkpoint_dict():
    state = TrainState(step=7, epoch=1, position=12, images_seen=28, skipped={5, 2})
    data = state.to_dict()
    assert data["skipped"].dtype == torch.int64 and data["skipped"].tolist() == [2, 5]
    assert TrainState.from_dict(data) == state
    assert TrainState.from_dict(state.to_dict({9})).skipped == {9}  # the set merged over processes


def test_checkpoints_are_found_newest_first_and_pruned(tmp_path):
    for step in (3, 10, 7):
        torch.save({}, checkpoint_file(tmp_path, step))
    assert [p.name for p in find_checkpoints(tmp_path)] == [checkpoint_file(tmp_path, s).name for s in (10, 7, 3)]
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in find_checkpoints(tmp_path)] == [checkpoint_file(tmp_path, s).name for s in (10, 7)]


def _damaged_folder(folder: Path) -> None:
    """Intact checkpoints at steps 1 and 2, step 3 cut off, and a garbage file with the highest step's name."""
    for step in (1, 2, 3):
        save_checkpoint(checkpoint_file(folder, step), {"format": CHECKPOINT_FORMAT, "step": step,
                                                        "weights": torch.zeros(256)})
    newest = checkpoint_file(folder, 3)
    newest.write_bytes(newest.read_bytes()[:600])
    checkpoint_file(folder, 999).write_bytes(b"not a checkpoint\n" * 8)


def _steps(folder: Path) -> list[int]:
    return [int(p.stem.rsplit("_", 1)[1]) for p in find_checkpoints(folder)]


def test_pruning_keeps_the_newest_intact_checkpoints_and_never_counts_or_deletes_broken_ones(tmp_path):
    _damaged_folder(tmp_path)
    prune_checkpoints(tmp_path, 2)
    assert _steps(tmp_path) == [999, 3, 2, 1]  # the two intact ones are kept; the broken ones are left alone
    save_checkpoint(checkpoint_file(tmp_path, 4), {"format": CHECKPOINT_FORMAT, "step": 4})
    prune_checkpoints(tmp_path, 2)
    assert _steps(tmp_path) == [999, 4, 3, 2]  # 4 and 2 are the two kept: 1, the third intact one, goes


def test_resume_moves_unreadable_newer_checkpoints_aside_and_says_so(tmp_path):
    _damaged_folder(tmp_path)
    assert load_latest_checkpoint(tmp_path)[0] == checkpoint_file(tmp_path, 2)  # no one to tell: nothing renamed
    assert _steps(tmp_path) == [999, 3, 2, 1]
    warnings: list[str] = []
    path, state = load_latest_checkpoint(tmp_path, warnings.append)
    assert path == checkpoint_file(tmp_path, 2) and state["step"] == 2
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "resuming from checkpoint_step_00000002.pt (step 2) because 2 newer checkpoints are unreadable" in \
        warnings[0] and warnings[0].endswith("renamed them to *.pt.broken")
    assert _steps(tmp_path) == [2, 1]
    assert sorted(p.name for p in tmp_path.glob("*.broken")) == ["checkpoint_step_00000003.pt.broken",
                                                                 "checkpoint_step_00000999.pt.broken"]
    checkpoint_file(tmp_path, 3).write_bytes(b"")  # damaged again: the free name gets a number
    load_latest_checkpoint(tmp_path, warnings.append)
    assert warnings[-1].endswith("renamed it to checkpoint_step_00000003.pt.broken2")


def test_rng_state_restores_the_draws():
    saved = rng_state(torch.device("cpu"))
    first = torch.rand(3)
    set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)


def test_loss_log_drops_rows_after_the_resumed_step(tmp_path):
    path = tmp_path / "loss.csv"
    log = LossLog(path, ("step", "loss"))
    for step in (1, 2, 3):
        log.add({"step": step, "loss": 1.0 / step})
    log.close()
    resumed = LossLog(path, ("step", "loss"), resume_step=2)
    resumed.add({"step": 3, "loss": 0.25})
    resumed.close()
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["step", "loss"], ["1", "1"], ["2", "0.5"], ["3", "0.25"]]
    assert list(resumed.columns["step"]) == [1.0, 2.0, 3.0]


def test_loss_log_column_formats(tmp_path):
    path = tmp_path / "loss.csv"
    log = LossLog(path, ("step", "height", "loss", "seconds"), int_columns=("step", "height"),
                  formats={"seconds": ".3f"})
    log.add({"step": 1, "height": 48.0, "loss": 1 / 3, "seconds": 1234.56789})
    log.close()
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["step", "height", "loss", "seconds"], ["1", "48", "0.333333", "1234.568"]]
