"""Several styles in one network (#29): the styles part within a few dozen steps at the default learning rate,
and the optimiser's two parameter groups (shared weights at --lr, the per-style norm tables faster) resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fast_train_data import make_checks, make_dataset, make_style, one_thread  # noqa: F401 (fixture)
from stylefusion.core.images import load_image
from stylefusion.core.losses import style_grams
from stylefusion.core.vgg import load_vgg19
from stylefusion.networks.cin import make_conditional, select_style
from stylefusion.networks.model_files import build_network, load_model
from stylefusion.training.loop import (NORM_LR_SCALE, TrainConfig, load_checkpoint, optimizer_groups, save_checkpoint,
                                       train)

LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
GAP = 0.96  # each style's own Gram error at least 4 % below the other style's (measured: see the test)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | list[Path]]:
    """A tiny dataset and two unlike styles (stripes, checks)."""
    root = tmp_path_factory.mktemp("multistyle")
    return {"dataset": make_dataset(root / "ds", corrupt=False),
            "styles": [make_style(root / "stripes.png"), make_checks(root / "checks.png")]}


def config(files: dict, out: Path, **overrides) -> TrainConfig:
    """A two-style run with the library's defaults (lr included) but for sizes, steps and files."""
    options = dict(style_image=files["styles"], content_dataset=files["dataset"], model_save_path=out / "two.pth",
                   batch_size=2, image_size=64, epochs=1000, checkpoint_interval=0, preview_interval=0, device="cpu")
    return TrainConfig(**{**options, **overrides})


def gram_errors(model: Path, styles: list[Path], content: torch.Tensor) -> list[list[float]]:
    """[style k's output][painting j]: relative Gram error (VGG relu1_2..relu4_3) of the output against painting j."""
    vgg = load_vgg19(list(LAYERS), "caffe")
    targets = [style_grams(vgg, [load_image(p, 64)[None]], None, LAYERS) for p in styles]
    network = load_model(model)[0]
    errors = []
    for style in range(len(styles)):
        select_style(network, style)
        with torch.no_grad():
            grams = style_grams(vgg, [(network(content * 255) / 255).clamp(0, 1)], None, LAYERS)
        errors.append([sum(float(((grams[k] - t[k]) ** 2).sum() / (t[k] ** 2).sum()) for k in LAYERS)
                       for t in targets])
    return errors


def test_styles_part_within_a_few_dozen_steps_at_the_default_lr(files: dict, tmp_path: Path) -> None:
    """48 steps at 64 px (24 per style), default lr: each style's output is the nearer one to its own painting.

    Measured gaps (the other style's error over the own one's, minus 1, styles 0 / 1): 0.3 % / 0.05 % with every
    parameter at --lr (style_norm_lr_scale=1, as before #29), 2.9 / 2.2 % at x10, 7.1 / 7.3 % at the default x30,
    19 / 20 % at x100; the 4 % asked for fails the first two and leaves the default a clear margin.
    """
    result = train(config(files, tmp_path, max_steps=48))
    content = load_image(next((files["dataset"] / "default_class").glob("img_00.jpg")), 64)[None]
    errors = gram_errors(result.model_path, files["styles"], content)
    assert errors[0][0] < GAP * errors[1][0] and errors[1][1] < GAP * errors[0][1], errors


def test_norm_tables_have_their_own_group_and_lr_and_it_resumes(files: dict, tmp_path: Path) -> None:
    """The checkpoint holds both groups at (lr, lr x scale); a resume at another lr sets both; one style: one group."""
    first = train(config(files, tmp_path, max_steps=3, lr=2e-3))
    groups = load_checkpoint(first.checkpoint)["optimizer"]["param_groups"]
    norms = 2 * sum(1 for k in first.network.state_dict() if k.endswith(".gamma"))  # gamma and beta tables
    assert [g["lr"] for g in groups] == [2e-3, 2e-3 * NORM_LR_SCALE] and len(groups[1]["params"]) == norms
    resumed = train(config(files, tmp_path, max_steps=4, lr=1e-3, resume=True))
    assert [g["lr"] for g in load_checkpoint(resumed.checkpoint)["optimizer"]["param_groups"]] == \
        [1e-3, 1e-3 * NORM_LR_SCALE]
    single = train(config(files, tmp_path / "single", style_image=files["styles"][0], max_steps=1))
    assert len(load_checkpoint(single.checkpoint)["optimizer"]["param_groups"]) == 1  # as before #29


def _one_group(checkpoint: Path, config: TrainConfig) -> None:
    """Rewrite a checkpoint's optimiser state as a multi-style run before #29 saved it: every parameter in one
    group, in the network's parameter order."""
    state = load_checkpoint(checkpoint)
    network = make_conditional(build_network("standard"), 2)
    flat = [id(p) for group in optimizer_groups(network, config) for p in group["params"]]
    position = {id(p): i for i, p in enumerate(network.parameters())}
    saved = state["optimizer"]
    group = {k: v for k, v in saved["param_groups"][0].items() if k != "params"}
    state["optimizer"] = {"state": {position[flat[i]]: s for i, s in saved["state"].items()},
                          "param_groups": [{**group, "params": list(range(len(flat)))}]}
    save_checkpoint(checkpoint, state)


def test_a_one_group_checkpoint_from_before_resumes_exactly(files: dict, tmp_path: Path) -> None:
    """At scale 1 the two groups are the old single group: resuming a one-group checkpoint equals not stopping."""
    whole = train(config(files, tmp_path / "whole", max_steps=6, style_norm_lr_scale=1.0))
    first = train(config(files, tmp_path / "parts", max_steps=3, style_norm_lr_scale=1.0))
    _one_group(first.checkpoint, config(files, tmp_path, style_norm_lr_scale=1.0))
    resumed = train(config(files, tmp_path / "parts", max_steps=6, style_norm_lr_scale=1.0, resume=True))
    assert resumed.resumed_from == first.checkpoint
    expected = whole.network.state_dict()
    for name, value in resumed.network.state_dict().items():
        assert torch.allclose(value, expected[name], rtol=1e-5, atol=1e-6), name


def test_the_sheet_shows_every_style_of_a_model_of_several(tmp_path: Path) -> None:
    """A sheet is for choosing: a two-style model gets a cell per style, captioned with its style image's name."""
    import numpy as np
    from PIL import Image

    from stylefusion.networks.cin import conditional_norms
    from stylefusion.networks.model_files import load_model, save_model
    from stylefusion.run.sheet import GAP_PX, MIN_CELL_PX, SheetConfig, make_sheet
    from tests.helpers import REPO, scene

    network = make_conditional(load_model(REPO / "models" / "udnie.pth")[0], 2)  # udnie twice ...
    with torch.no_grad():
        for norm in conditional_norms(network):
            norm.beta[1].add_(1.0)  # ... but the second style shifts every norm: another picture
    save_model(network, tmp_path / "two.pth", {"styles": ["stripes.png", "checks.png"]})
    scene((48, 32)).save(tmp_path / "photo.png")
    captions: list[str] = []
    out = make_sheet(SheetConfig(photo=tmp_path / "photo.png", output=tmp_path / "sheet.png",
                                 model_paths=[tmp_path / "two.pth"], device="cpu", precision="fp32"), captions.append)
    assert captions == ["two.pth: stripes.png", "two.pth: checks.png"]
    sheet = torch.from_numpy(np.array(Image.open(out).convert("RGB"))).float()

    def tile(column: int) -> torch.Tensor:  # photo, style 0, style 1 in one row of MIN_CELL_PX cells, centred
        x = GAP_PX + column * (MIN_CELL_PX + GAP_PX) + (MIN_CELL_PX - 48) // 2
        return sheet[GAP_PX:GAP_PX + 32, x:x + 48]

    assert (tile(1) - tile(2)).abs().mean() > 5
