"""CLI plumbing: under torchrun a bad input is reported once, by rank 0; a rank's own failure by that rank."""

from __future__ import annotations

import sys

import pytest

from stylefusion_cli import common as cli_common
from stylefusion.core.distributed import DistributedError
from stylefusion.core.errors import ConfigError


def _raise(error: Exception):
    def main(argv: list[str] | None) -> int:
        raise error
    return main


@pytest.mark.parametrize("rank, reported", [("0", True), ("1", False)])
def test_bad_input_is_reported_by_rank_0_only(monkeypatch, capsys, rank, reported):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert cli_common.run_cli(_raise(ConfigError("--batch_size must be at least 1"))) == cli_common.EXIT_ERROR
    assert ("error: --batch_size must be at least 1" in capsys.readouterr().err) == reported


def test_a_ranks_own_failure_is_reported_by_that_rank(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli_common.run_cli(_raise(DistributedError("rank 1: a peer process stopped"))) == cli_common.EXIT_ERROR
    assert "rank 1: a peer process stopped" in capsys.readouterr().err


@pytest.mark.parametrize("rank, reported", [("0", True), ("1", False)])
def test_usage_errors_are_reported_once(monkeypatch, capsys, rank, reported):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    parser = cli_common.OneLineParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--n", "many"])
    assert exit_info.value.code == 2
    assert ("invalid int value" in capsys.readouterr().err) == reported


def test_single_process_is_main(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")
    assert cli_common.is_main_process()


def test_first_frame_warnings_name_only_files_of_several_frames(tmp_path):
    from PIL import Image

    one, two, text = tmp_path / "one.png", tmp_path / "two.tiff", tmp_path / "text.jpg"
    Image.new("RGB", (8, 8)).save(one)
    Image.new("RGB", (8, 8)).save(two, save_all=True, append_images=[Image.new("RGB", (8, 8), "red")] * 2)
    text.write_text("not an image")
    lines = cli_common.first_frame_warnings([one, two, text, tmp_path / "missing.jpg", None])
    assert lines == [f"warning: {two} holds 3 frames (animated or multi-page): only the first is used"]


def test_first_frame_warnings_print_no_pillow_warning_for_a_large_photo(tmp_path, monkeypatch):
    """A photo over Pillow's warning size (89 MP by default; here lowered) gets no raw DecompressionBombWarning."""
    import warnings

    from PIL import Image

    photo = tmp_path / "big.png"
    Image.new("RGB", (8, 8)).save(photo)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 64 px: over the limit, under twice it (a warning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_common.first_frame_warnings([photo]) == []
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []


def test_a_refused_allocation_is_one_line_and_other_runtime_errors_stay_loud(capsys):
    """torch's CPU allocator raises a RuntimeError with a C++ trace: the CLI says one line instead."""
    import pytest

    def refused(argv):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 768000000 bytes. Error code 12 (Cannot allocate memory)")

    assert cli_common.run_cli(refused, []) == cli_common.EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out of memory (an allocation of 0.72 GB was refused)")

    def bug(argv):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        cli_common.run_cli(bug, [])


@pytest.mark.parametrize("argv0, shown", [("/usr/local/bin/fast-style-transfer", "fast-style-transfer"),
                                          ("fast_style_transfer.py", "python fast_style_transfer.py")])
def test_the_download_advice_names_the_command_the_user_ran(monkeypatch, argv0, shown):
    # Installed, there is no fast_style_transfer.py to run: the console command's own name is the advice.
    import argparse

    from stylefusion.core.errors import ModelError
    from stylefusion_cli.common import require_model

    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(ModelError, match=f"run `{shown} --mode download`"):
        require_model(argparse.Namespace(model_path="udnie"), "image")
