"""Training library: dataset, sampler, the loss going down on real VGG-19, files written, fine-tuning, errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from fast_train_data import IMAGE_SIZE, data, make_dataset, make_style, one_thread  # noqa: F401 (fixtures)
from stylefusion.training.dataset import ContentImages, EpochSampler, collate, epoch_order, find_images, resize_crop
from stylefusion.core.device import cpu_supports_bf16
from stylefusion.core.errors import ConfigError, DatasetError, ModelError, OutputError
from stylefusion.core.plotting import draw_loss_curve
from stylefusion.training.loop import (LOG_COLUMNS, StopFlag, TrainConfig, TrainProgress, train, train_paths,
                                       validate_config)
from stylefusion.networks.transformer import TransformerNet
from stylefusion.networks.model_files import load_model


def config(data: tuple[Path, Path], out: Path, **overrides) -> TrainConfig:
    dataset, style = data
    options = dict(style_image=style, content_dataset=dataset, model_save_path=out / "model.pth", batch_size=2,
                   image_size=IMAGE_SIZE, epochs=100, checkpoint_interval=0, preview_interval=0, device="cpu")
    options.update(overrides)
    return TrainConfig(**options)


# ------------------------------------------------------------------------------------------------ dataset

def test_find_images_walks_nested_folders_sorted_and_skips_hidden(data):
    dataset, _ = data
    files = find_images(dataset)
    names = [f.relative_to(dataset).as_posix() for f in files]
    assert len(files) == 9  # 8 images + 1 unreadable; the hidden '._' file is left out
    assert names == sorted(names)
    assert "default_class/nested/img_02.jpg" in names
    assert not any(Path(n).name.startswith(".") for n in names)


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not found"),
    (lambda p: (p.mkdir(), p)[1], "no image files"),
    (lambda p: (p.write_text("x"), p)[1], "must be a folder"),
])
def test_find_images_errors(tmp_path, make, message):
    with pytest.raises(DatasetError, match=message):
        find_images(make(tmp_path / "dataset"))


def test_unreadable_files_are_replaced_by_the_next_readable_one(data):
    files = find_images(data[0])
    images = ContentImages(files, IMAGE_SIZE)
    broken = [i for i, f in enumerate(files) if f.name == "broken.jpg"][0]
    image, skipped = images[broken]
    assert skipped == (broken,)
    assert torch.equal(image, images.load((broken + 1) % len(files)))
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and 0 <= image.min() and image.max() <= 1
    batch, bad = collate([images[broken], images[(broken + 1) % len(files)]])
    assert batch.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and bad == [broken]


def test_dataset_without_readable_images_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"junk")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the 2 image files"):
        ContentImages(find_images(tmp_path), IMAGE_SIZE).first_readable()


def test_resize_crop_is_square_and_centred():
    img = Image.new("RGB", (100, 50), "red")
    img.paste((0, 0, 255), (0, 0, 25, 50))  # blue left quarter: cropped away by the centre crop
    out = resize_crop(img, 32)
    assert out.size == (32, 32)
    assert out.getpixel((0, 16))[0] > 200  # left edge of the crop is red


def test_epoch_sampler_is_a_seeded_permutation_sharded_across_ranks():
    order = epoch_order(11, seed=3, epoch=0).tolist()
    assert sorted(order) == list(range(11))
    assert order == epoch_order(11, seed=3, epoch=0).tolist()
    assert order != epoch_order(11, seed=3, epoch=1).tolist()
    single = EpochSampler(11, 3, 0, start=4).indices()
    assert single == order[4:]
    shards = [EpochSampler(11, 3, 0, start=4, rank=r, world_size=2).indices() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(EpochSampler(11, 3, 0, start=4, world_size=2)) == 4
    assert set(shards[0]) | set(shards[1]) == set(order[4:])  # 7 remaining, padded to 8 by repeating one


# ---------------------------------------------------------------------------------------------- training

def test_thirty_steps_lower_the_loss_and_write_model_log_curve_previews(data, tmp_path):
    seen: list[TrainProgress] = []
    result = train(config(data, tmp_path, max_steps=30, preview_interval=10, checkpoint_interval=20), seen.append)

    totals = [p.total for p in seen]
    assert [p.step for p in seen] == list(range(1, 31)) and seen[-1].total_steps == 30
    assert sum(totals[-5:]) / 5 < 0.9 * sum(totals[:5]) / 5, totals
    assert all(p.content > 0 and p.style > 0 and p.images_per_s > 0 for p in seen)
    assert [p.step for p in seen if p.preview] == [10, 20, 30]
    assert [p.step for p in seen if p.checkpoint] == [20]

    assert not result.stopped and result.model_path == tmp_path / "model.pth" and result.step == 30
    net, settings = load_model(result.model_path)
    assert settings["style_image"] == "stripes.png" and settings["steps"] == 30
    assert settings["image_size"] == IMAGE_SIZE and settings["content_layers"] == "relu2_2"
    assert settings["style_layers"] == "relu1_2,relu2_2,relu3_3,relu4_3"
    assert settings["style_weight"] == TrainConfig.style_weight and settings["batch_size"] == 2
    for name, value in result.network.state_dict().items():
        assert torch.equal(value, net.state_dict()[name])
    assert [f.name for f in result.skipped_files] == ["broken.jpg"]

    paths = train_paths(config(data, tmp_path))
    with open(paths.loss_log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS and [int(r["step"]) for r in rows] == list(range(1, 31))
    assert math.isclose(float(rows[-1]["total"]), totals[-1], rel_tol=1e-4)
    with Image.open(paths.loss_curve) as curve:
        assert curve.format == "PNG" and curve.size == (900, 500)
    previews = sorted(p.name for p in paths.preview_dir.iterdir())
    assert previews == ["step_00000010.jpg", "step_00000020.jpg", "step_00000030.jpg"]
    with Image.open(paths.preview_dir / previews[-1]) as preview:
        assert preview.size == (IMAGE_SIZE, IMAGE_SIZE)
    checkpoints = sorted(p.name for p in paths.checkpoint_dir.iterdir())
    assert checkpoints == ["checkpoint_step_00000020.pt", "checkpoint_step_00000030.pt"]  # no temp files left


def test_stop_flag_ends_the_run_with_a_checkpoint_and_no_model(data, tmp_path):
    stop = StopFlag()
    result = train(config(data, tmp_path, max_steps=50),
                   lambda p: stop.request("test") if p.step == 3 else None, stop)
    assert result.stopped and result.stop_reason == "test" and result.step == 3
    assert result.model_path is None and not (tmp_path / "model.pth").exists()
    assert result.checkpoint.name == "checkpoint_step_00000003.pt" and result.checkpoint.exists()


def test_stability_term_is_computed_and_logged(data, tmp_path):
    pytest.importorskip("stylefusion.training.stability")
    seen: list[TrainProgress] = []
    train(config(data, tmp_path, max_steps=2, stability_weight=10.0), seen.append)
    assert all(p.stability > 0 for p in seen)
    assert all(math.isclose(p.total, p.content + p.style + p.tv + p.stability, rel_tol=1e-5) for p in seen)


def test_stability_settings_reach_the_term(data, tmp_path):
    # A perturbation that moves nothing and adds no noise leaves nothing to penalise: the settings are used.
    from stylefusion.training.stability import CompoundRegularization
    still = CompoundRegularization(max_shift=0, max_rotation_deg=0, max_zoom=0, motion_std=0, noise_std=0)
    seen: list[TrainProgress] = []
    train(config(data, tmp_path, max_steps=2, stability_weight=10.0, stability_settings=still), seen.append)
    assert [p.stability for p in seen] == [0.0, 0.0]


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_autocast_training_runs(data, tmp_path):
    seen: list[TrainProgress] = []
    result = train(config(data, tmp_path, max_steps=2, precision="bf16"), seen.append)
    assert result.step == 2 and all(math.isfinite(p.total) for p in seen)
    assert all(v.dtype == torch.float32 for v in result.network.state_dict().values())  # fp32 master weights


def test_fine_tuning_starts_from_the_pretrained_weights(data, tmp_path):
    torch.manual_seed(7)
    pretrained = TransformerNet()
    # A pytorch/examples release: a bare state dict that still carries stale InstanceNorm running stats.
    state = dict(pretrained.state_dict())
    state["in1.running_mean"] = torch.zeros(32)
    torch.save(state, tmp_path / "examples_style.pth")
    result = train(config(data, tmp_path / "out", max_steps=1, lr=1e-9,
                          pretrained_model_path=tmp_path / "examples_style.pth"))
    for name, value in pretrained.state_dict().items():
        assert torch.allclose(result.network.state_dict()[name], value, atol=1e-6), name
    assert load_model(result.model_path)[1]["pretrained_model"] == "examples_style.pth"


def test_pretrained_model_errors(data, tmp_path):
    with pytest.raises(ModelError, match="pretrained model not found.*--mode download"):
        train(config(data, tmp_path, pretrained_model_path=tmp_path / "udnie.pth"))
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="another architecture"):
        train(config(data, tmp_path, pretrained_model_path=tmp_path / "other.pth"))
    assert not (tmp_path / "model_checkpoints").exists()  # nothing created before the inputs were checked


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": 16}, "at least 32"),
    ({"image_size": 50}, "multiple of 4"),
    ({"batch_size": 0}, "batch_size"),
    ({"style_weight": -1.0}, "style_weight"),
    ({"content_layers": "relu9_1"}, "unknown VGG-19 layer"),
    ({"max_steps": 0}, "max_steps"),
])
def test_bad_options(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config(data, tmp_path, **overrides))


def test_loss_curve_png(tmp_path):
    steps = list(range(1, 2001))
    path = draw_loss_curve(steps, {"total": [100 / s for s in steps], "style": [50 / s for s in steps],
                                   "tv": [0.0] * len(steps)}, tmp_path / "curve.png")
    with Image.open(path) as img:
        img = img.convert("RGB")
        assert img.size == (900, 500)
        colours = {img.getpixel((x, y)) for x in range(img.width) for y in range(0, img.height, 2)}
    assert (214, 39, 40) in colours and (20, 20, 20) in colours  # the style and total lines were drawn
    empty = draw_loss_curve([], {}, tmp_path / "empty.png")
    assert empty.exists()


def test_auto_precision_means_fp32_for_training():
    from stylefusion.core.device import training_precision
    from stylefusion.training.loop import TrainConfig

    assert TrainConfig("s.png", "d", "m.pth").precision == "auto"
    assert training_precision("auto") == "fp32"
    assert [training_precision(p) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize("name, what", [
    ("model_loss.png", "loss curve"),
    ("model_loss.csv", "loss log"),
    ("model_previews/step_00000001.jpg", "preview"),
    ("model_checkpoints/checkpoint_step_00000001.pt", "checkpoint"),
])
def test_an_input_at_a_by_product_name_is_refused_before_training(data, tmp_path, name, what):
    # The style image (or pretrained model) where the run writes its loss curve, log, a preview or a checkpoint.
    _, style = data
    victim = tmp_path / name
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(style.read_bytes())
    field = "pretrained_model_path" if what == "checkpoint" else "style_image"
    with pytest.raises(OutputError, match=rf"^refusing to overwrite an input file: .*{victim.name} is where this "
                                          rf"run writes its {what}"):
        train(config(data, tmp_path, max_steps=1, preview_interval=1, **{field: victim}))
    assert victim.read_bytes() == style.read_bytes()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == \
        sorted({name, *([name.split("/")[0]] if "/" in name else [])})


def test_previews_folder_of_a_run_without_previews_may_hold_inputs(data, tmp_path):
    # With --preview_interval 0 nothing is written there: a style image of that name is no clash.
    _, style = data
    victim = tmp_path / "model_previews" / "step_00000001.jpg"
    victim.parent.mkdir()
    victim.write_bytes(style.read_bytes())
    result = train(config(data, tmp_path, max_steps=1, style_image=victim))
    assert result.step == 1 and victim.read_bytes() == style.read_bytes()


def test_resume_with_another_lr_and_batch_size_notes_it_once(data, tmp_path):
    train(config(data, tmp_path, max_steps=2, batch_size=1))
    (tmp_path / "model.pth").unlink()  # finished: --resume may continue the run that wrote it
    notes: list[str] = []
    result = train(config(data, tmp_path, max_steps=4, batch_size=3, lr=0.1, resume=True), note=notes.append)
    assert notes == ["resuming with --lr 0.1 and --batch_size 3; the checkpoint was trained with lr 0.001, "
                     "batch_size 1"]
    assert result.step == 4
    # The epoch counts passes over the data (9 files): batch 1 took steps 1-2 to reach image 2, batch 3 covers
    # images 2-5, 5-8 and 8-9 in steps 3-5, so epoch 0 ends where the images run out, whatever the batch size.
    with open(tmp_path / "model_loss.csv", newline="") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 0, 0, 0]
    (tmp_path / "model.pth").unlink()
    notes.clear()
    train(config(data, tmp_path, max_steps=6, batch_size=3, lr=0.1, resume=True), note=notes.append)
    assert notes == []  # the same settings as the checkpoint's: nothing to say
    with open(tmp_path / "model_loss.csv", newline="") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 0, 0, 0, 0, 1]
