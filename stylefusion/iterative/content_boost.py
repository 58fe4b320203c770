"""The content weight raised at the start of a run, then brought back: the start's layout kept while the style closes.

Not in Gatys et al. From Magenta's rendering the style loss starts 5-60 times the content loss (the eight pairs of
bench/RESULTS.md at 384 px), so L-BFGS's first steps serve the style alone and move the image far from the photo's
layout, which the rest of a 100-step run then wins back only in part. The content weight starts `initial` times
higher, chosen so that the style outweighs the content at most `STYLE_PER_CONTENT` times, and falls linearly to
the run's own weight over `steps` steps, so where the run ends the objective is the user's.
"""

from __future__ import annotations

from dataclasses import dataclass

# At most this style-to-content ratio of the weighted losses at the start, and at most this boost. Measured on the
# pairs of bench/RESULTS.md "Time to quality" (the ratio is about 5-60 there): with the fall over the whole run and a
# 3-level pyramid, a bound of 5 reaches neural-style-pt's 500-step result at 100 steps on all but two of 15 pairs at
# 384 px and on both at 512 px; 4 kept one more at 384 px (chelsea x Starry Night's content, 0.3 % short at 5) but
# lost golden_gate x The Scream at 512 px (mean style 0.6 % over) and left the busy paintings' style thin margins.
# The pairs near 5 (hoovertowernight x Shipwreck, amber x Udnie) keep their weights, the busiest start (golden_gate x
# mosaic, ratio 58) gets about 12x.
STYLE_PER_CONTENT = 5.0
MAX_BOOST = 20.0


@dataclass(frozen=True)
class ContentBoost:
    """The factor on the content weight at each step: `initial` at step 0, 1 from step `steps` on."""
    initial: float
    steps: int

    def factor(self, step: int) -> float:
        """The content weight's factor for the step after `step` steps done."""
        if self.steps <= 0:
            return 1.0
        return 1.0 + (self.initial - 1.0) * max(0.0, 1.0 - step / self.steps)


def content_boost(content_loss: float, style_loss: float, steps: int,
                  style_per_content: float = STYLE_PER_CONTENT, most: float = MAX_BOOST) -> ContentBoost:
    """The boost for a start whose weighted losses are these: style / content brought down to `style_per_content`
    (never below 1x, at most `most`); none where the content already matches or the style is not counted."""
    if steps <= 0 or content_loss <= 0 or style_loss <= 0:
        return ContentBoost(1.0, 0)
    return ContentBoost(min(most, max(1.0, style_loss / content_loss / style_per_content)), steps)
