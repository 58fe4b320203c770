"""The guided filter (core/guided_filter.py): window means, flat colours kept, the guide's edges put back."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylefusion.core.guided_filter import box_mean, guided_filter


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_the_box_mean_equals_a_pooled_mean(radius: int) -> None:
    # The separable sums of shifted slices must be the plain (2r+1)^2 window mean with replicated edges.
    x = torch.rand(4, 7, 11)
    padded = F.pad(x[None], (radius,) * 4, mode="replicate")
    pooled = F.avg_pool2d(padded, 2 * radius + 1, stride=1)[0]
    assert box_mean(x, radius).shape == x.shape
    assert torch.allclose(box_mean(x, radius), pooled, atol=1e-6)


def test_a_flat_image_stays_flat_whatever_the_guide() -> None:
    guide = torch.rand(3, 40, 50)
    flat = torch.full((3, 40, 50), 0.3)
    assert torch.allclose(guided_filter(flat, guide, 2, 1e-3), flat, atol=1e-5)


def test_a_blurred_image_gets_the_guides_edges_back_with_its_own_colours() -> None:
    # The guide: a grey step edge. The image: the same edge in red and blue, blurred over 7 px. Filtered, the
    # colours jump where the guide's edge is (over 0.3 in one pixel, not a 1/7 ramp step) and stay red and blue.
    guide = torch.zeros(3, 32, 48)
    guide[:, :, 24:] = 1.0
    sharp = torch.zeros(3, 32, 48)
    sharp[0, :, :24], sharp[2, :, 24:] = 0.8, 0.7
    blurred = F.avg_pool2d(F.pad(sharp[None], (3, 3, 3, 3), mode="replicate"), 7, stride=1)[0]
    filtered = guided_filter(blurred, guide, 2, 1e-4)
    jump = (filtered[:, :, 23] - filtered[:, :, 24]).mean(1)
    assert jump[0] > 0.3 and jump[2] < -0.25 and (blurred[:, :, 23] - blurred[:, :, 24]).abs().max() < 0.15
    torch.testing.assert_close(filtered[:, :, :12], sharp[:, :, :12], atol=0.02, rtol=0)
    torch.testing.assert_close(filtered[:, :, 36:], sharp[:, :, 36:], atol=0.02, rtol=0)
    # a large eps fits no slope to the guide: the image's own smooth ramp stays
    loose = guided_filter(blurred, guide, 2, 10.0)
    assert (loose[:, :, 23] - loose[:, :, 24]).abs().max() < 0.15
