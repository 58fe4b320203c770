"""Stylizer (pad/crop, precision, layout) and the batch image mode (planning, batching, failures, colour)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylefusion.core.color import rgb_to_yuv
from stylefusion.core.device import cpu_supports_bf16
from stylefusion.core.errors import ConfigError, InputImageError, OutputError
from stylefusion.core.images import pil_to_tensor
from stylefusion.run.folder import ImageOptions, plan_images, stylize_images
from stylefusion.run.stylizer import Stylizer, check_image_size, stylise
from stylefusion.networks.transformer import TransformerNet
from tests.conftest import pattern_array
from tests.helpers import scene
from tests.test_transformer import trained_like_network


@pytest.fixture(scope="module")
def net() -> TransformerNet:
    return trained_like_network(3)


def reference(net: TransformerNet, batch: torch.Tensor) -> torch.Tensor:
    """The plain network on a batch whose sides are multiples of 4: 0-255 in and out."""
    with torch.no_grad():
        return (net(batch * 255) / 255).clamp(0, 1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_stylizer_matches_plain_network_fp32(net, channels_last):
    batch = torch.rand(2, 3, 24, 32)
    out = Stylizer(net, "cpu", "fp32", channels_last=channels_last)(batch)
    torch.testing.assert_close(out, reference(net, batch), atol=2e-5, rtol=0)


@pytest.mark.parametrize("size", [(5, 5), (21, 34), (34, 21)])
def test_output_keeps_exact_input_size(net, size):
    batch = torch.rand(3, 3, *size)
    out = stylise(net, batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    assert 0 <= out.min() and out.max() <= 1
    assert out.is_contiguous() and not out.is_inference()
    out.mul_(2)  # callers (the video mode) may post-process in place


def test_padding_only_affects_the_border(net):
    """A 30x30 image padded to 32x32: far from the padded edge it matches a 32x32 run on the same pixels."""
    full = torch.rand(1, 3, 32, 32)
    cropped = Stylizer(net)(full[..., :30, :30].contiguous())
    torch.testing.assert_close(cropped[..., :16, :16], reference(net, full)[..., :16, :16], atol=0.05, rtol=0)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_close_to_fp32(net):
    batch = pil_to_tensor(scene((48, 40))).unsqueeze(0)
    fp32 = Stylizer(net, "cpu", "fp32")(batch)
    bf16 = Stylizer(net, "cpu", "bf16")
    assert bf16.compute_dtype == torch.bfloat16
    out = bf16(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    psnr = 10 * torch.log10(1 / ((out - fp32) ** 2).mean())
    assert psnr > 35, psnr


@pytest.mark.parametrize("size", [(16, 20), (13, 10)])
def test_block_conv_equals_the_thin_conv(size):
    from stylefusion.networks.inference import BlockConv
    from stylefusion.networks.transformer import ConvLayer

    torch.manual_seed(0)
    layer = ConvLayer(32, 3, 9, 1).eval()
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        torch.testing.assert_close(BlockConv(layer)(x), layer(x), atol=1e-4, rtol=1e-4)


def test_stylizer_does_not_touch_the_given_network(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    Stylizer(net, "cpu", "fp32")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(net.in1, torch.nn.InstanceNorm2d)


def test_bad_batches_are_refused(net):
    stylizer = Stylizer(net)
    with pytest.raises(InputImageError, match="too small"):
        stylizer(torch.rand(1, 3, 4, 40))
    with pytest.raises(ConfigError, match="B, 3, H, W"):
        stylizer(torch.rand(3, 16, 16))
    with pytest.raises(ConfigError):
        stylizer(torch.zeros(1, 3, 16, 16, dtype=torch.int64))
    check_image_size(5, 5)


@pytest.mark.parametrize("tile_size", [None, 24])
def test_uint8_batches_give_the_float_result_rounded(net, tile_size):
    """A uint8 photo (how image mode hands a large one over) gives the float result as uint8, whole or tiled."""
    stylizer = Stylizer(net, tile_size=tile_size)
    photo = (torch.rand(1, 3, 45, 62) * 255).round().to(torch.uint8)
    want = stylizer(photo.float() / 255)
    got = stylizer(photo)
    assert got.dtype == torch.uint8 and got.shape == photo.shape
    diff = (got.float() - want.mul(255).round()).abs()
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert got.float().std() > 0.1  # not a constant image


# ------------------------------------------------------------------------------------------------ planning
def write(path, size=(40, 32), seed=0):
    """A small deterministic test image of size (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern_array(*size, seed=seed)).save(path)
    return path


def test_plan_mirrors_tree_and_skips_output_inside_input(tmp_path):
    src = tmp_path / "in"
    write(src / "a.jpg")
    write(src / "sub" / "deeper" / "b.png")
    write(src / "c.gif")
    (src / "notes.txt").write_text("not an image")
    write(src / ".hidden.jpg")
    write(src / "out" / "old.jpg")  # a previous run's output folder inside the input folder
    plan = plan_images(src, src / "out")
    got = {p.relative_to(src).as_posix(): t.relative_to(src / "out").as_posix() for p, t in plan.pairs}
    assert got == {"a.jpg": "a.jpg", "sub/deeper/b.png": "sub/deeper/b.png", "c.gif": "c.png"}
    assert not plan.single_file
    assert not (src / "out" / "sub").exists()  # planning writes nothing


def test_plan_gives_colliding_png_fallbacks_their_own_names(tmp_path):
    # GIF and PGM inputs get PNG results: beside an input x.png, or two of them named y, none may overwrite another.
    src = tmp_path / "in"
    for name in ("x.png", "x.gif", "y.gif", "y.pgm", "z.gif"):
        write(src / name)
    plan = plan_images(src, tmp_path / "out")
    got = {p.name: t.name for p, t in plan.pairs}
    assert got == {"x.png": "x.png", "x.gif": "x.gif.png", "y.gif": "y.png", "y.pgm": "y.pgm.png", "z.gif": "z.png"}
    assert len({t for _, t in plan.pairs}) == len(plan.pairs)


def test_plan_single_file(tmp_path):
    image = write(tmp_path / "in" / "photo.jpg")
    plan = plan_images(image, tmp_path / "out")
    assert plan.single_file and plan.pairs == ((image, tmp_path / "out" / "photo.jpg"),)


@pytest.mark.parametrize("case", ["same-dir", "same-dir-of-file", "would-overwrite-input"])
def test_plan_refuses_to_overwrite_inputs(tmp_path, case):
    src = tmp_path / "in"
    image = write(src / "a.jpg")
    if case == "same-dir":
        args = (src, tmp_path / "in" / ".")
    elif case == "same-dir-of-file":
        args = (image, src)
    else:  # output = parent of input: in/in/a.jpg would be mirrored onto the input in/a.jpg
        write(src / "in" / "a.jpg")
        args = (src, tmp_path)
    with pytest.raises(OutputError, match="overwrite"):
        plan_images(*args)


def test_plan_errors(tmp_path):
    with pytest.raises(InputImageError, match="not found"):
        plan_images(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputImageError, match="no image files"):
        plan_images(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        plan_images(tmp_path / "empty", tmp_path / "file")


# ---------------------------------------------------------------------------------------------- image mode
class Recorder:
    """A stand-in Stylizer that inverts colours and records the batch shapes it was given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        return 1 - batch


def test_same_size_images_are_batched_and_failures_skipped(tmp_path):
    src = tmp_path / "in"
    for i in range(5):
        write(src / f"a{i}.png", (40, 32), seed=i)
    write(src / "sub" / "b.png", (24, 36))
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write(src / "tiny.png", (40, 3))
    events = []
    recorder = Recorder()
    summary = stylize_images(plan_images(src, tmp_path / "out"), recorder, ImageOptions(batch_size=2),
                             events.append)
    assert (summary.stylised, summary.failed) == (6, 2)
    assert sorted(p.name for p, _ in summary.failures) == ["broken.jpg", "tiny.png"]
    assert sorted(recorder.shapes) == [(1, 3, 32, 40), (1, 3, 36, 24), (2, 3, 32, 40), (2, 3, 32, 40)]
    assert [e.done for e in events] == list(range(1, 9)) and events[-1].total == 8
    assert sum(e.error is not None for e in events) == 2
    out = np.asarray(Image.open(tmp_path / "out" / "a3.png"))
    assert np.array_equal(out, 255 - np.asarray(Image.open(src / "a3.png")))  # each result lands at its name
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (24, 36)
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no temporary files left
    assert not (tmp_path / "out" / "broken.jpg").exists()


def test_many_distinct_sizes_do_not_pile_up(tmp_path):
    src = tmp_path / "in"
    for i in range(9):
        write(src / f"{i}.png", (20 + i, 20))
    recorder = Recorder()
    summary = stylize_images(plan_images(src, tmp_path / "out"), recorder, ImageOptions(batch_size=4))
    assert summary.stylised == 9 and len(recorder.shapes) == 9


def test_single_file_failure_raises(tmp_path):
    image = tmp_path / "bad.png"
    image.write_bytes(b"nope")
    with pytest.raises(InputImageError, match="bad.png"):
        stylize_images(plan_images(image, tmp_path / "out"), Recorder())


def test_exif_rotated_input_comes_out_upright_at_max_size(tmp_path, net):
    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape 60x40, displayed rotated 90 degrees: portrait 40x60
    scene((60, 40)).save(src / "rotated.jpg", exif=exif)
    stylize_images(plan_images(src, tmp_path / "out"), Stylizer(net), ImageOptions(max_size=30))
    assert Image.open(tmp_path / "out" / "rotated.jpg").size == (20, 30)


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_preserve_color_uses_the_input_colours(tmp_path, mode):
    src = tmp_path / "in"
    src.mkdir()
    scene((40, 32)).save(src / "a.png")
    out = tmp_path / mode
    swap = lambda b: b[:, [2, 0, 1]]  # noqa: E731  a 'style' that changes every colour
    stylize_images(plan_images(src, out), swap, ImageOptions(preserve_color=mode))
    original = pil_to_tensor(Image.open(src / "a.png"))
    swapped = swap(original[None])[0]
    got = pil_to_tensor(Image.open(out / "a.png"))
    if mode == "luminance":  # luminance of the stylised image, chroma of the input
        yuv_got, yuv_in, yuv_sw = rgb_to_yuv(got), rgb_to_yuv(original), rgb_to_yuv(swapped)
        assert (yuv_got[1:] - yuv_in[1:]).abs().mean() < 0.01 < (yuv_sw[1:] - yuv_in[1:]).abs().mean()
        assert (yuv_got[0] - yuv_sw[0]).abs().mean() < 0.01
    else:  # colour statistics of the input
        assert (got.mean((1, 2)) - original.mean((1, 2))).abs().max() < 0.01
        assert (swapped.mean((1, 2)) - original.mean((1, 2))).abs().max() > 0.05


def test_options_are_validated(tmp_path):
    write(tmp_path / "in" / "a.png")
    plan = plan_images(tmp_path / "in", tmp_path / "out")
    for options, needle in [(ImageOptions(batch_size=0), "batch_size"), (ImageOptions(max_size=4), "max_size"),
                            (ImageOptions(preserve_color="sepia"), "preserve_color")]:
        with pytest.raises(ConfigError, match=needle):
            stylize_images(plan, Recorder(), options)


def test_plan_shards_are_disjoint_and_cover_everything(tmp_path):
    from PIL import Image

    from stylefusion.run.folder import plan_images

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(7):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(src / ("sub" if i % 2 else ".") / f"img{i}.png")
    plan = plan_images(src, tmp_path / "out")
    shards = [plan.shard(rank, 3).pairs for rank in range(3)]
    flat = [pair for shard in shards for pair in shard]
    assert sorted(flat) == sorted(plan.pairs) and len(flat) == len(set(flat)) == 7
    assert all(len(shard) >= 2 for shard in shards)
    assert plan.shard(0, 1) is plan


def test_a_network_that_outputs_nan_is_refused_not_written_black() -> None:
    from stylefusion.core.errors import ModelError

    torch.manual_seed(0)
    net = TransformerNet()
    with torch.no_grad():
        net.deconv3.conv2d.bias.fill_(float("nan"))  # finite-looking elsewhere; NaN would clamp to black
    with pytest.raises(ModelError, match="NaN or infinite"):
        Stylizer(net, "cpu", "fp32")(torch.rand(1, 3, 24, 24))


@pytest.mark.parametrize("local_rank", [0, 1, 2])
def test_image_device_is_one_gpu_per_torchrun_process(monkeypatch, local_rank):
    from stylefusion.run.folder import image_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    assert image_device("cuda") == torch.device("cuda", local_rank)
    assert image_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: cuda stays as asked
    assert image_device("cuda") == torch.device("cuda")


def test_image_device_refuses_more_processes_than_gpus(monkeypatch):
    from stylefusion.core.distributed import DistributedError
    from stylefusion.run.folder import image_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(DistributedError, match="LOCAL_RANK=3"):
        image_device("cuda")


def test_stylize_folder_runs_image_mode_in_one_call(tmp_path, net):
    from stylefusion.run.folder import ImageConfig, ImageStart, stylize_folder
    from stylefusion.networks.model_files import save_model

    src = tmp_path / "in"
    for i in range(3):
        write(src / f"a{i}.png", (40, 32), seed=i)
    (src / "broken.jpg").write_bytes(b"not an image")
    model = tmp_path / "m.pth"
    save_model(net, model)
    starts: list[ImageStart] = []
    events = []
    config = ImageConfig(src, tmp_path / "out", model, batch_size=2, device="cpu", precision="fp32",
                         tile_size=32, retain_freed_memory=False)
    tiles = []
    summary = stylize_folder(config, events.append, tiles.append, starts.append)
    assert (summary.stylised, summary.failed, summary.unreadable) == (3, 1, ())
    assert len(starts) == 1 and (starts[0].total, starts[0].rank, starts[0].world_size) == (4, 0, 1)
    assert len(events) == 4 and tiles  # tile_size forces tiles: the tile callback hears of them
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a0.png", "a1.png", "a2.png"]
    with pytest.raises(ConfigError, match="batch_size"):
        stylize_folder(ImageConfig(src, tmp_path / "out2", model, batch_size=0))


def test_bf16_refused_where_a_setting_hides_it_says_so(monkeypatch):
    # Under ONEDNN_MAX_CPU_ISA=AVX2 an AVX512-BF16 CPU reports no bf16: the message names the setting too.
    import stylefusion.core.device as device
    from stylefusion.core.errors import DeviceError

    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(DeviceError, match=r"no native bf16 support \(or ONEDNN_MAX_CPU_ISA=AVX2 hides it\)"):
        device.check_precision("bf16", torch.device("cpu"))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    with pytest.raises(DeviceError, match=r"no native bf16 support; use --precision fp32"):
        device.check_precision("bf16", torch.device("cpu"))
