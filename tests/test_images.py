"""stylefusion.core.images: every Pillow mode loads as the right RGB pixels, bad files fail with one clear line,
saves are atomic, resizes keep the aspect ratio; and the sample data the CLIs' examples use is there."""

from __future__ import annotations

import errno
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylefusion.core import images
from stylefusion.core.errors import InputImageError, OutputError, StyleFusionError
from stylefusion.core.images import (atomic_path, load_image, load_pil, pil_to_tensor, resize_longest, resize_to,
                                     save_image, scaled_size, tensor_to_pil)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
WHITE = (255, 255, 255)


def pixels(path: Path) -> np.ndarray:
    """What load_pil gives, as an (H, W, 3) int array (after checking it is 8-bit RGB)."""
    image = load_pil(path)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


# ------------------------------------------------------------------------------------ modes and alpha
def test_rgba_transparent_pixels_become_white_and_partial_alpha_blends(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)    # opaque red
    rgba[:, 4:] = (0, 0, 255, 0)      # fully transparent blue: must not show through
    rgba[0, 0] = (0, 255, 0, 128)     # half-transparent green over white
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = pixels(path)
    assert out.shape == (6, 8, 3)
    assert (out[1:, :4] == (255, 0, 0)).all()
    assert (out[:, 4:] == WHITE).all()
    np.testing.assert_allclose(out[0, 0], (127, 255, 127), atol=1)


def test_la_greyscale_with_alpha(tmp_path):
    la = np.zeros((4, 4, 2), np.uint8)
    la[:, :2] = (50, 255)   # opaque dark grey
    la[:, 2:] = (50, 0)     # transparent
    la[3, 0] = (0, 128)     # half-transparent black over white
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    out = pixels(path)
    assert (out[:3, :2] == 50).all()
    assert (out[:, 2:] == 255).all()
    np.testing.assert_allclose(out[3, 0], (127, 127, 127), atol=1)


def _palette_image() -> Image.Image:
    """6x4 P image: index 0 black background, 1 red at (0, 0), 2 blue at (5, 0), 3 orange at (0, 3)."""
    image = Image.new("P", (6, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 128, 0] + [0] * (252 * 3))
    image.putpixel((0, 0), 1)
    image.putpixel((5, 0), 2)
    image.putpixel((0, 3), 3)
    return image


def test_palette_image_without_transparency(tmp_path):
    path = tmp_path / "p.png"
    _palette_image().save(path)
    out = pixels(path)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 5]) == (0, 0, 255)
    assert tuple(out[3, 0]) == (255, 128, 0)
    assert tuple(out[1, 1]) == (0, 0, 0)  # index 0 is plain black here, not transparent


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_image_with_transparent_index(tmp_path, suffix):
    path = tmp_path / f"p_transparent{suffix}"
    _palette_image().save(path, transparency=0)
    out = pixels(path)
    assert tuple(out[1, 1]) == WHITE  # the transparent background index
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 5]) == (0, 0, 255)
    assert tuple(out[3, 0]) == (255, 128, 0)


def test_palette_image_with_per_entry_alpha(tmp_path):
    path = tmp_path / "p_alpha.png"
    _palette_image().save(path, transparency=bytes([0, 128, 255, 255]))  # tRNS: one alpha per entry
    out = pixels(path)
    assert tuple(out[1, 1]) == WHITE
    np.testing.assert_allclose(out[0, 0], (255, 127, 127), atol=1)  # half-transparent red over white
    assert tuple(out[0, 5]) == (0, 0, 255)


@pytest.mark.parametrize("mode, fill, key", [("RGB", (10, 20, 30), (10, 20, 30)), ("L", 7, 7)])
def test_png_colour_key_transparency(tmp_path, mode, fill, key):
    # A PNG tRNS chunk on an RGB / greyscale image marks one colour as transparent.
    image = Image.new(mode, (4, 3), fill)
    image.putpixel((0, 0), (200, 100, 50) if mode == "RGB" else 200)
    path = tmp_path / f"key_{mode}.png"
    image.save(path, transparency=key)
    out = pixels(path)
    assert tuple(out[2, 3]) == WHITE
    assert tuple(out[0, 0]) == ((200, 100, 50) if mode == "RGB" else (200, 200, 200))


def test_16bit_png_colour_key_transparency(tmp_path):
    values = np.full((3, 4), 300, np.uint16)
    values[0, 0] = 65535
    path = tmp_path / "key16.png"
    Image.fromarray(values).save(path, transparency=300)
    out = pixels(path)
    assert tuple(out[2, 3]) == WHITE
    assert tuple(out[0, 0]) == WHITE  # opaque full-scale white pixel


def test_cmyk_tiff_converts_exactly(tmp_path):
    cmyk = np.zeros((4, 8, 4), np.uint8)
    cmyk[:, 2:4] = (255, 0, 0, 0)      # cyan
    cmyk[:, 4:6] = (0, 0, 255, 0)      # yellow
    cmyk[:, 6:] = (0, 0, 0, 255)       # black
    path = tmp_path / "cmyk.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    out = pixels(path)
    assert (out[:, :2] == WHITE).all()
    assert (out[:, 2:4] == (0, 255, 255)).all()
    assert (out[:, 4:6] == (255, 255, 0)).all()
    assert (out[:, 6:] == 0).all()


def test_cmyk_jpeg(tmp_path):
    # CMYK JPEGs are stored inverted (Adobe); a wrong inversion would give red instead of cyan.
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, 16:] = (255, 0, 0, 0)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = pixels(path)
    np.testing.assert_allclose(out[8, 4], WHITE, atol=4)
    np.testing.assert_allclose(out[8, 28], (0, 255, 255), atol=4)


def _gradient16(width: int = 256) -> np.ndarray:
    return np.linspace(0, 65535, width).round().astype(np.uint16)[None, :].repeat(3, axis=0)


@pytest.mark.parametrize("suffix, raw_mode", [(".png", "I;16"), (".tif", "I;16B")])
def test_16bit_greyscale_keeps_its_full_range(tmp_path, suffix, raw_mode):
    values = _gradient16()
    path = tmp_path / f"grey16{suffix}"
    Image.frombytes(raw_mode, (values.shape[1], values.shape[0]),
                    values.astype(">u2" if raw_mode.endswith("B") else "<u2").tobytes()).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    out = pixels(path)
    expected = np.floor(values / 65535 * 255 + 0.5).astype(int)
    assert (out[..., 0] == expected).all() and (out[..., 1] == expected).all()
    assert out.min() == 0 and out.max() == 255   # not clipped at 255/65535 of the way up
    assert len(np.unique(out)) == 256            # every 8-bit level of the ramp survives


def test_dark_16bit_image_stays_dark(tmp_path):
    # Values up to 255 of 65535 are almost black: they must not be read as 8-bit values.
    values = np.linspace(0, 255, 64).astype(np.uint16)[None, :].repeat(2, axis=0)
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    assert pixels(path).max() <= 1


def test_1bit_png(tmp_path):
    bits = (np.indices((6, 9)).sum(axis=0) % 2).astype(bool)  # checkerboard
    path = tmp_path / "bits.png"
    Image.fromarray(bits).convert("1").save(path)
    assert Image.open(path).mode == "1"
    out = pixels(path)
    assert (out[bits] == 255).all() and (out[~bits] == 0).all()


def test_greyscale_jpeg_gives_three_equal_channels(make_image):
    path = make_image("grey.jpg", size=(16, 12), mode="L")
    out = pixels(path)
    assert out.shape == (12, 16, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


# ---------------------------------------------------------------------------------------- EXIF rotation
QUADRANTS = {"tl": (255, 0, 0), "tr": (0, 255, 0), "bl": (0, 0, 255), "br": (255, 255, 255)}


def _quadrant_jpeg(path: Path, orientation: int) -> None:
    """40x20 JPEG, four flat quadrants (red, green / blue, white) as stored, with an EXIF orientation."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10, :20], stored[:10, 20:] = QUADRANTS["tl"], QUADRANTS["tr"]
    stored[10:, :20], stored[10:, 20:] = QUADRANTS["bl"], QUADRANTS["br"]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)


@pytest.mark.parametrize("orientation, size, shown", [
    # 6: the camera was turned clockwise; display rotates the stored pixels 90 degrees clockwise.
    (6, (20, 40), {"tl": "bl", "tr": "tl", "bl": "br", "br": "tr"}),
    # 8: display rotates 90 degrees anticlockwise.
    (8, (20, 40), {"tl": "tr", "tr": "br", "bl": "tl", "br": "bl"}),
    (3, (40, 20), {"tl": "br", "tr": "bl", "bl": "tr", "br": "tl"}),  # 180 degrees
    (1, (40, 20), {"tl": "tl", "tr": "tr", "bl": "bl", "br": "br"}),  # upright
])
def test_exif_orientation_is_applied(tmp_path, orientation, size, shown):
    path = tmp_path / f"exif{orientation}.jpg"
    _quadrant_jpeg(path, orientation)
    image = load_pil(path)
    assert image.size == size
    out = np.asarray(image).astype(int)
    w, h = size
    centres = {"tl": (h // 4, w // 4), "tr": (h // 4, 3 * w // 4), "bl": (3 * h // 4, w // 4),
               "br": (3 * h // 4, 3 * w // 4)}
    for where, stored_quadrant in shown.items():
        np.testing.assert_allclose(out[centres[where]], QUADRANTS[stored_quadrant], atol=30,
                                   err_msg=f"orientation {orientation}: {where} should show {stored_quadrant}")


def test_load_image_applies_exif_too(tmp_path):
    path = tmp_path / "exif6.jpg"
    _quadrant_jpeg(path, 6)
    assert load_image(path).shape == (3, 40, 20)


# ------------------------------------------------------------------------------------------- bad files
def _message(path: Path) -> str:
    with pytest.raises(InputImageError) as info:
        load_image(path)
    message = str(info.value)
    assert isinstance(info.value, StyleFusionError)
    assert "\n" not in message and str(path) in message  # one line, names the file
    return message


def test_missing_file(tmp_path):
    assert "not found" in _message(tmp_path / "nope.jpg")


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    assert "directory" in _message(folder)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jpg"
    path.touch()
    assert "empty (0 bytes)" in _message(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "readme.jpg"
    path.write_text("these are not the pixels you are looking for\n")
    assert "not an image" in _message(path)


def test_truncated_jpeg(make_image, tmp_path):
    data = make_image("whole.jpg", size=(64, 64)).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _message(path)


def test_jpeg_cut_inside_its_header(make_image, tmp_path):
    data = make_image("whole.jpg", size=(64, 64)).read_bytes()
    path = tmp_path / "header_only.jpg"
    path.write_bytes(data[:60])
    _message(path)


def test_tiny_image_loads_exactly(make_image):
    path = make_image("tiny.png", size=(8, 8), seed=3)
    image = load_image(path)
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    expected = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    assert torch.equal(image, expected)


def test_load_image_resizes_by_longest_side(make_image):
    image = load_image(make_image("wide.png", size=(64, 32)), size=16)
    assert image.shape == (3, 8, 16)
    assert 0.0 <= image.min() and image.max() <= 1.0


# -------------------------------------------------------------------------------------------- saving
def _ramp_tensor(h: int = 12, w: int = 16) -> torch.Tensor:
    """A tensor of exact 8-bit levels, so a PNG round trip must give it back bit for bit."""
    levels = torch.arange(3 * h * w).reshape(3, h, w) % 256
    return levels.float() / 255


def test_save_png_round_trips_exactly_and_leaves_no_temp_files(tmp_path):
    image = _ramp_tensor()
    out = save_image(image, tmp_path / "out.png")
    assert out == tmp_path / "out.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert torch.equal(load_image(out), image)


def test_save_accepts_batched_tensor_and_pil_image(tmp_path):
    image = _ramp_tensor()
    save_image(image[None], tmp_path / "batched.png")
    save_image(tensor_to_pil(image), tmp_path / "pil.png")
    assert torch.equal(load_image(tmp_path / "batched.png"), image)
    assert torch.equal(load_image(tmp_path / "pil.png"), image)


def test_save_jpeg_round_trip_is_close(tmp_path):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    image = torch.stack([xx, yy, 1 - xx * yy])  # smooth colours: JPEG at quality 95 is near-lossless here
    loaded = load_image(save_image(image, tmp_path / "out.jpg"))
    assert loaded.shape == image.shape
    assert (loaded - image).abs().mean() < 0.01
    assert (loaded - image).abs().max() < 0.1


def test_save_clamps_out_of_range_values(tmp_path):
    image = torch.tensor([-0.5, 0.5, 1.5]).reshape(3, 1, 1).expand(3, 2, 2).contiguous()
    out = pixels(save_image(image, tmp_path / "clamped.png"))
    assert tuple(out[0, 0]) == (0, 128, 255)


def test_failed_save_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    target.write_bytes(b"the previous result")

    real_open = open

    def disk_full(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            f.write(b"half an ima")  # a partial write, then the failure
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(images, "open", disk_full, raising=False)
    with pytest.raises(OutputError, match="No space left on device") as info:
        save_image(_ramp_tensor(), target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "result.jpg"
    target.write_bytes(b"old")

    real_open = open

    def interrupted(file, mode="r", *args, **kwargs):
        with real_open(file, mode, *args, **kwargs) as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "open", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        save_image(_ramp_tensor(), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.jpg"]


def test_an_encoder_that_drops_a_short_write_cannot_truncate_the_result(tmp_path, monkeypatch):
    # Pillow's JPEG writer, writing to a file, let a full disk's short write pass (a tmpfs of 64 KiB: a truncated
    # file, no error). Modelled here: a save to a file keeps only its first 1000 bytes and reports nothing.
    real_save = Image.Image.save

    def short_write(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            buffer = io.BytesIO()
            real_save(self, buffer, *args, **kwargs)
            Path(fp).write_bytes(buffer.getvalue()[:1000])
            return None
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", short_write)
    target = save_image(torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0)), tmp_path / "result.jpg")
    with Image.open(target) as image:
        image.load()  # a truncated JPEG raises here
    assert target.stat().st_size > 1000


def test_a_full_disk_is_an_error_not_a_truncated_image(tmp_path):
    # The real case where the privileges allow a 64 KiB tmpfs; a 256 px noise JPEG does not fit.
    folder = tmp_path / "small_disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(OutputError, match="No space left on device"):
            save_image(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0)), folder / "result.jpg")
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_unwritable_mode_for_format_is_an_output_error(tmp_path):
    target = tmp_path / "alpha.jpg"
    target.write_bytes(b"old")
    with pytest.raises(OutputError):
        save_image(Image.new("RGBA", (4, 4)), target)  # JPEG has no alpha: Pillow refuses
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["alpha.jpg"]


def test_save_into_missing_folder_or_onto_a_folder(tmp_path):
    with pytest.raises(OutputError, match="cannot write"):
        save_image(_ramp_tensor(), tmp_path / "no" / "such" / "dir.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        save_image(_ramp_tensor(), tmp_path / "taken.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]
    assert list((tmp_path / "taken.png").iterdir()) == []


def test_save_rejects_unknown_extension(tmp_path):
    with pytest.raises(OutputError, match="extension"):
        save_image(_ramp_tensor(), tmp_path / "out.xyz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_gets_normal_permissions(tmp_path):
    # The temporary file is renamed into place: it must not keep a private 0600 mode.
    old_umask = os.umask(0o022)
    try:
        out = save_image(_ramp_tensor(), tmp_path / "shared.png")
    finally:
        os.umask(old_umask)
    assert out.stat().st_mode & 0o777 == 0o644
    out.chmod(0o640)  # overwriting keeps the existing file's permissions
    save_image(_ramp_tensor(), out)
    assert out.stat().st_mode & 0o777 == 0o640
    out.chmod(0o444)  # even read-only ones (the directory is writable, so the rename is allowed)
    save_image(_ramp_tensor() * 0.5, out)
    assert out.stat().st_mode & 0o777 == 0o444


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "data.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and tmp.exists()
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"newer but broken")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]



@pytest.mark.parametrize("stem", ["b" * 240, "é" * 124])  # 244 and 252 bytes with ".jpg": legal names
def test_any_legal_output_name_can_be_written_through_its_temporary_file(tmp_path, stem):
    target = tmp_path / f"{stem}.jpg"
    save_image(_ramp_tensor(), target)
    assert load_pil(target).size == (_ramp_tensor().shape[-1], _ramp_tensor().shape[-2])
    with atomic_path(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        assert images.temp_files_of(target) == [tmp]  # a killed run's file is still found by its name
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]

# ------------------------------------------------------------------------------------------- resizing
@pytest.mark.parametrize("shape, longest, expected", [
    ((3, 30, 64), 32, (3, 15, 32)),
    ((3, 64, 30), 32, (3, 32, 15)),
    ((2, 3, 40, 20), 16, (2, 3, 16, 8)),
    ((3, 10, 10), 25, (3, 25, 25)),     # upscaling too
    ((3, 3, 300), 30, (3, 1, 30)),      # never a zero-size side
])
def test_resize_longest_keeps_aspect(shape, longest, expected):
    assert tuple(resize_longest(torch.rand(shape), longest).shape) == expected


def test_scaled_size_values():
    assert scaled_size(384, 512, 256) == (192, 256)
    assert scaled_size(512, 384, 256) == (256, 192)
    assert scaled_size(170, 451, 300) == (113, 300)


def test_resize_keeps_pixel_values_sensible():
    flat = torch.full((3, 40, 60), 0.25)
    torch.testing.assert_close(resize_longest(flat, 24), torch.full((3, 16, 24), 0.25))
    ramp = torch.linspace(0, 1, 60).expand(3, 40, 60)
    small = resize_longest(ramp, 30)
    assert (small[0, 5].diff() > 0).all()  # still a left-to-right ramp
    assert 0 <= small.min() and small.max() <= 1


def test_resize_to_same_size_is_identity():
    image = torch.rand(3, 8, 12)
    assert torch.equal(resize_to(image, (8, 12)), image)


def test_pil_tensor_round_trip_is_exact():
    array = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3) * 8
    image = Image.fromarray(array, mode="RGB")
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(image))), array)


# --------------------------------------------------------------------------------- shipped sample data
def test_example_images_exist_and_load():
    for name, size in {"city.jpg": (512, 384), "udnie.jpg": (512, 512), "astronaut.jpg": (512, 512)}.items():
        assert load_pil(DATA / name).size == size, name


def test_example_training_folder():
    files = sorted((DATA / "train2014" / "default_class").iterdir())
    assert 8 <= len(files) <= 12 and all(f.suffix == ".jpg" for f in files)
    for f in files:
        assert max(load_pil(f).size) <= 256, f.name


def test_example_video_has_h264_video_and_aac_audio():
    av = pytest.importorskip("av")
    path = DATA / "maigua.mp4"
    assert path.stat().st_size < 300_000
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert float(video.average_rate) == 24  # while open: PyAV 18.1.1 refuses a closed container's fields
    assert len(frames) == 72 and frames[0].shape == (240, 320, 3)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 10  # it pans: not a still


def test_sample_data_stays_small():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 2_500_000


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_walk_images_follows_symlinked_folders_once_and_never_loops(tmp_path):
    from stylefusion.core.images import walk_images

    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (root / "a").mkdir(parents=True)
    elsewhere.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a" / "x.png")
    Image.new("RGB", (4, 4)).save(elsewhere / "y.png")
    Image.new("RGB", (4, 4)).save(root / ".hidden.png")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # followed
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)   # a loop: cut
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # the same folder twice: once
    (root / "out").mkdir()
    Image.new("RGB", (4, 4)).save(root / "out" / "z.png")
    found = walk_images(root, exclude=(root / "out").resolve())
    assert sorted(p.relative_to(root).as_posix() for p in found) == ["a/x.png", "linked/y.png"]
