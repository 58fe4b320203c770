"""training/checkpoint.py and core/losslog.py: TrainState round trip, checkpoint names/pruning, the loss-log CSV writer."""

from __future__ import annotations

import csv

import torch

from stylefusion.training.checkpoint import (TrainState, checkpoint_file, find_checkpoints, prune_checkpoints,
                                             rng_state, set_rng_state)
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
