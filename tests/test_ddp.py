"""Distributed training: 2 CPU processes with gloo end with identical weights, only rank 0 writes, and checkpoints
move between single-process and distributed runs."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fast_train_data import IMAGE_SIZE, make_checks, make_dataset, make_style
from stylefusion.core.distributed import DistributedError, all_reduce_sum, distributed_context, process_group
from stylefusion.training.loop import TrainConfig, find_latest_checkpoint, load_checkpoint, train
from stylefusion.networks.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _options(root: Path, **overrides) -> dict:
    options = dict(style_image=str(root / "stripes.png"), content_dataset=str(root / "dataset"),
                   model_save_path=str(root / "out" / "model.pth"), batch_size=2, image_size=IMAGE_SIZE, epochs=10,
                   checkpoint_interval=0, preview_interval=1, device="cpu", stability_weight=1.0)
    options.update(overrides)
    return options


def _worker(rank: int, world_size: int, port: int, options: dict, report_dir: str) -> None:
    """One rank: train, then record what it wrote and a hash of its final weights."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import stylefusion.training.loop as training

    writes: list[str] = []
    for name in ("save_model", "save_checkpoint", "save_image"):
        original = getattr(training, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            writes.append(_name)
            return _original(*args, **kwargs)
        setattr(training, name, spy)
    calls: list[int] = []
    result = training.train(training.TrainConfig(**options), lambda p: calls.append(p.step))
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                     for _, v in sorted(result.network.state_dict().items()))).hexdigest()
    Path(report_dir, f"rank{rank}.json").write_text(json.dumps(
        {"digest": digest, "writes": sorted(set(writes)), "callbacks": calls, "step": result.step}))


def _dead_peer_worker(rank: int, port: int, report_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    with process_group(torch.device("cpu"), timeout_s=20) as ctx:
        all_reduce_sum(torch.ones(1), ctx)
        if rank == 1:
            os._exit(0)  # a peer that dies without leaving the group
        try:
            all_reduce_sum(torch.ones(1), ctx)
        except DistributedError as exc:
            Path(report_dir, "error.txt").write_text(str(exc))
            os._exit(0)


def test_a_dead_peer_is_a_clear_error_not_a_hang(tmp_path):
    mp.spawn(_dead_peer_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    message = (tmp_path / "error.txt").read_text()
    assert message.startswith("rank 0: a peer process stopped or timed out (") and "\n" not in message


def test_distributed_context_reads_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_context() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed_context() == (3, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match="outside"):
        distributed_context()


def test_two_process_gloo_training_and_checkpoints_across_process_counts(tmp_path):
    make_dataset(tmp_path / "dataset")
    make_style(tmp_path / "stripes.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # A single-process checkpoint continues under 2 processes ...
        train(TrainConfig(**_options(tmp_path, max_steps=2)))
        reports = tmp_path / "reports"
        reports.mkdir()
        mp.spawn(_worker, args=(2, _free_port(), _options(tmp_path, max_steps=4, resume=True), str(reports)),
                 nprocs=2, join=True)
        rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in range(2))
        assert rank0["step"] == rank1["step"] == 4
        assert rank0["digest"] == rank1["digest"]  # DDP kept the replicas identical
        assert rank0["writes"] == ["save_checkpoint", "save_image", "save_model"] and rank1["writes"] == []
        assert rank0["callbacks"] == [3, 4] and rank1["callbacks"] == []
        out = tmp_path / "out"
        assert sorted(p.name for p in (out / "model_previews").iterdir()) == [
            f"step_{s:08d}.jpg" for s in (1, 2, 3, 4)]
        checkpoint = find_latest_checkpoint(out / "model_checkpoints")
        state = load_checkpoint(checkpoint)
        assert state["world_size"] == 2 and state["step"] == 4
        # The single process saw 2 x 2 of the 9 files; 2 ranks x batch 2 then finish the epoch in 2 steps.
        assert state["epoch"] == 1 and state["position"] == 0
        ddp_weights = load_model(out / "model.pth")[0].state_dict()

        # ... and the distributed checkpoint continues in a single process.
        result = train(TrainConfig(**_options(tmp_path, max_steps=5, resume=True)))
        assert result.resumed_from == checkpoint and result.step == 5 and result.epoch == 1
        assert any(not torch.equal(v, result.network.state_dict()[k]) for k, v in ddp_weights.items())
    finally:
        torch.set_num_threads(threads)


def test_two_process_multi_style_training(tmp_path):
    """Several styles under DDP: every rank takes the same style each step, so the replicas stay identical."""
    make_dataset(tmp_path / "dataset")
    styles = [str(make_style(tmp_path / "stripes.png")), str(make_checks(tmp_path / "checks.png"))]
    reports = tmp_path / "reports"
    reports.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), _options(tmp_path, style_image=styles, max_steps=3, preview_interval=0,
                                                      stability_weight=0.0), str(reports)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in range(2))
    assert rank0["step"] == rank1["step"] == 3 and rank0["digest"] == rank1["digest"]
    network, settings = load_model(tmp_path / "out" / "model.pth")
    assert settings["styles"] == ["stripes.png", "checks.png"] and settings["world_size"] == 2
    assert not torch.equal(network.in1.gamma[0], network.in1.gamma[1])  # each style learned its own norms


def test_torchrun_cli_two_cpu_processes(tmp_path):
    make_dataset(tmp_path / "dataset", corrupt=False)
    make_style(tmp_path / "stripes.png")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "fast_style_transfer.py", "--mode", "train", "--style_image", str(tmp_path / "stripes.png"),
         "--content_dataset", str(tmp_path / "dataset"), "--model_save_path", str(out / "m.pth"),
         "--image_size", str(IMAGE_SIZE), "--batch_size", "2", "--max_steps", "2", "--device", "cpu",
         "--num_workers", "0", "--preview_interval", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    # On failure the ranks' own lines (torchrun's summary at the end names only the signal).
    assert proc.returncode == 0, proc.stderr[:4000] + "\n...\n" + proc.stderr[-2000:]
    assert proc.stderr.count("saved model to") == 1  # only rank 0 reports
    assert sorted(p.name for p in out.iterdir()) == ["m.pth", "m_checkpoints", "m_loss.csv", "m_loss.png"]
    settings = load_model(out / "m.pth")[1]
    assert settings["world_size"] == 2 and settings["steps"] == 2 and settings["images_seen"] == 8
