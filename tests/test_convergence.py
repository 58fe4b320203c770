"""--tol (stop a size once its loss has converged) and the demo's own defaults."""

import csv

import pytest

import stylefusion.iterative.gatys as iterative
from stylefusion.core.errors import ConfigError
from stylefusion.iterative.gatys import TOL_WINDOW, Convergence, IterativeConfig, stylize
from stylefusion_cli import iterative as cli

from helpers import assert_one_line_error, run_script, scene_and_stripes


@pytest.fixture()
def images(tmp_path):
    return scene_and_stripes(tmp_path)


def config(tmp_path, content, style, **kw):
    # no content boost: --tol waits for it to end (test_content_boost.py), these tests time the stop itself
    base = dict(content_image=content, style_images=[style], output_dir=tmp_path / "out", epochs=1,
                steps_per_epoch=10, image_size=64, multiscale=False, output_format="png", device="cpu",
                content_boost_steps=0)
    base.update(kw)
    return IterativeConfig(**base)


def geometric(rate, n):
    return [100.0 * (1 - rate) ** i for i in range(n)]


def test_convergence_compares_the_mean_decrease_per_step_with_tol():
    # a loss falling 1 % a step has converged for tol 2 % but not for tol 0.5 %, after a full window
    fast, slow = Convergence(0.02), Convergence(0.005)
    flags_fast = [fast.update(x) for x in geometric(0.01, 30)]
    flags_slow = [slow.update(x) for x in geometric(0.01, 30)]
    assert flags_fast.index(True) == TOL_WINDOW  # the first step at which a whole window is known
    assert not any(flags_slow)
    # a rising loss counts as converged; reset() forgets the history
    rising = Convergence(1e-6)
    assert [rising.update(float(x)) for x in range(1, TOL_WINDOW + 2)][-1] is True
    rising.reset()
    assert rising.update(5.0) is False
    assert not any(Convergence(None).update(x) for x in geometric(0.0, 30))  # off: never


def test_tol_stops_the_size_early_and_skips_its_later_epochs(tmp_path, images):
    content, style = images
    full = stylize(config(tmp_path / "full", content, style, epochs=3, steps_per_epoch=20))
    full_totals = [float(r["total"]) for r in csv.DictReader(open(full.loss_log))]
    # the tol at which this run's own loss curve converges, read from the uninterrupted run
    tol = 1.5 * (full_totals[9] - full_totals[19]) / (full_totals[9] * TOL_WINDOW)
    stop = next(i for i in range(TOL_WINDOW, 60)
                if (full_totals[i - TOL_WINDOW] - full_totals[i]) / (full_totals[i - TOL_WINDOW] * TOL_WINDOW) < tol)
    assert stop < 40  # the test needs a stop before the last epoch

    progress = []
    result = stylize(config(tmp_path, content, style, epochs=3, steps_per_epoch=20, tol=tol), progress.append)
    rows = list(csv.DictReader(open(result.loss_log)))
    assert result.steps == len(rows) == stop + 1
    # the same steps as the uninterrupted run up to the stop
    assert [float(r["total"]) for r in rows] == pytest.approx(full_totals[:stop + 1], rel=1e-5)
    # the epoch in which it converged is saved, the later ones at that size are not; the final image is
    assert [p.name for p in result.epoch_paths] == [f"epoch_{e:03d}.png" for e in range(1, stop // 20 + 2)]
    assert not (tmp_path / "out" / "epoch_003.png").exists() and result.final_path.exists()
    converged = [p for p in progress if p.converged]
    assert len(converged) == 1 and converged[0].step == stop + 1 and converged[0].total_steps == stop + 1


def test_tol_at_a_coarse_scale_moves_on_to_the_next(tmp_path, images):
    content, style = images
    result = stylize(config(tmp_path, content, style, scale_steps=[40, 5], tol=0.5))
    rows = list(csv.DictReader(open(result.loss_log)))
    sizes = [(int(r["height"]), int(r["width"])) for r in rows]
    # the huge tol stops the coarse scale as soon as a window is full; the fine scale's 5 steps never fill one
    coarse, fine = sizes[0], sizes[-1]
    assert coarse < fine and sizes == [coarse] * (TOL_WINDOW + 1) + [fine] * 5
    assert [p.name for p in result.epoch_paths] == ["epoch_001.png", "epoch_002.png"]


@pytest.mark.parametrize("tol", [0.0, 1.0, float("nan"), -0.1])
def test_bad_tol_is_refused(tmp_path, images, tol):
    content, style = images
    with pytest.raises(ConfigError, match="tol"):
        stylize(config(tmp_path, content, style, tol=tol))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-1", "0", "1", "2", "nan"])
def test_cli_bad_tol_is_one_line(tmp_path, images, value):
    content, style = images
    r = run_script("stylefusion.py", "--content_image", content, "--style_image", style, "--output_dir",
                   tmp_path / "o", "--tol", value)
    assert_one_line_error(r, "--tol")
    assert not (tmp_path / "o").exists()


def test_the_demo_has_its_own_shorter_defaults_and_explicit_options_win(monkeypatch, tmp_path, images):
    from stylefusion.iterative.gatys import ARBITRARY_STEPS
    seen = []

    def fake_stylize(config, callback=None):
        seen.append(config)
        raise ConfigError("stop here")

    monkeypatch.setattr(iterative, "stylize", fake_stylize)
    content, style = images
    out = ["--output_dir", str(tmp_path / "o")]
    for argv in ([*out], [*out, "--epochs", "3"], ["--content_image", str(content), "--style_image", str(style), *out]):
        with pytest.raises(ConfigError):
            cli.main(argv)
    demo, demo_epochs, normal = seen
    assert (demo.epochs, demo.steps_per_epoch) == (cli.DEMO_EPOCHS, cli.DEMO_STEPS_PER_EPOCH)
    assert (demo.image_size, normal.image_size) == (cli.DEMO_IMAGE_SIZE, IterativeConfig.image_size)
    assert cli.DEMO_IMAGE_SIZE < IterativeConfig.image_size
    assert demo.epochs * demo.steps_per_epoch < ARBITRARY_STEPS  # below even the shortest default budget
    assert (demo_epochs.epochs, demo_epochs.steps_per_epoch) == (3, cli.DEMO_STEPS_PER_EPOCH)
    # with images given: the library's default, the step budget for the start (gatys.default_steps)
    assert (normal.epochs, normal.steps_per_epoch) == (IterativeConfig.epochs, None)
