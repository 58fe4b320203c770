"""The time-to-quality benchmark's pieces end to end at a tiny size: the reference writes the inputs it used,
a run takes them, and the scorer compares the run with the reference on those same inputs."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from tests.helpers import run_script


def test_reference_inputs_are_written_and_scored_against(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    result = run_script("bench/gatys_reference.py", "--content", "data/city.jpg", "--style", "data/udnie.jpg",
                        "--size", 64, "--steps", 3, "--snapshots", 3, "--out", ref)
    assert result.returncode == 0, result.stderr
    for name in ("content.png", "style.png"):
        with Image.open(ref / name) as image:
            assert max(image.size) == 64  # resized once, by the reference, to --size
    assert (ref / "step_0003.png").exists() and (ref / "times.json").exists()
    result = run_script("stylefusion.py", "--content_image", ref / "content.png", "--style_image", ref / "style.png",
                        "--image_size", 64, "--epochs", 2, "--steps_per_epoch", 2, "--output_format", "png",
                        "--output_dir", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    result = run_script("bench/time_to_quality.py", "--reference", ref, "--size", 64, run)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| run | step |")]
    assert [row.split(" | ")[0] for row in rows] == ["| reference", "| run", "| run"]  # one row a snapshot
    assert "reference: 3 steps" in result.stdout


def test_a_fresh_pair_without_its_photo_is_skipped_with_its_reason(tmp_path, monkeypatch):
    """The scikit-image photos of ttq_pairs.FRESH: without scikit-image and without a reference already made,
    --all cannot make the pair, and says why instead of failing in the reference script."""
    monkeypatch.syspath_prepend("bench")
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage then raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    import ttq_pairs

    content, painting = ttq_pairs.FRESH[0]
    assert ttq_pairs.content_path(content) is None
    assert ttq_pairs.content_path("astronaut").name == "astronaut.jpg"  # the others do not need it
    with pytest.raises(FileNotFoundError, match="scikit-image"):
        ttq_pairs.ensure_reference(tmp_path, content, painting)
    assert not (tmp_path / "reference").exists()
