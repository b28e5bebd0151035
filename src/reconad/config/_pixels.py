"""Settings given in pixels, against the size of the images they meet.

Two kinds of setting are given in pixels, and they meet a new image size differently:

- the pose of a whole object scales with the image: ``train.augment_shift`` and
  ``score.tta_shift`` are fractions of the image side (the latter rounded to whole pixels,
  :func:`reconad.transforms.tta_pixels`: copies of an 8x8 image are not moved at all);
- the grain a texture model looks at does not (a larger texture patch holds more texture at
  the same scale, not a zoomed one): ``train.crop``, ``loss.ssim_window``,
  ``score.ssim_window``, ``score.smooth_sigma`` and ``score.color_sigmas`` stay in pixels, and
  are refused, in one line naming the key and the largest value that fits, where the images
  are too small for them (:func:`check_pixel_settings`), before any training.

>>> check_pixel_settings(LossConfig(kind="ssim"), TrainConfig(), ScoreConfig(), (1, 8, 8))
Traceback (most recent call last):
...
reconad.errors.ReconadError: loss.ssim_window=11 is larger than the 8x8 images; use an odd ...
"""

from __future__ import annotations

from reconad.config._schema import LossConfig, ScoreConfig, TrainConfig
from reconad.errors import ReconadError

SMOOTH_TRUNCATE = 4.0  # a Gaussian of sigma s reaches 4 s (scipy's and gaussian_smooth's)


def check_pixel_settings(loss: LossConfig, train: TrainConfig, score: ScoreConfig,
                         image_shape: tuple[int, ...]) -> None:
    """Refuse a setting in pixels that cannot work on images of ``image_shape`` (C, H, W).

    A training crop or an SSIM window larger than the images does not fit in them; a
    smoothing or colour-statistics scale whose Gaussian reaches past the whole image
    (4 sigma > the shorter side) averages the map into one value, so nothing is located.

    Raises:
        ReconadError: one line naming the key, the images and the largest value that fits.
    """
    height, width = int(image_shape[-2]), int(image_shape[-1])
    side = min(height, width)
    size = f"{height}x{width} images"
    if train.crop is not None and train.crop > side:
        raise ReconadError(f"train.crop={train.crop} is larger than the {size}; use a crop "
                           f"<= {side} or train.crop=null")
    trained = train.crop or side  # the model learns on crops of this side
    if loss.kind in ("ssim", "mix") and loss.ssim_window > trained:
        seen = f"{trained}x{trained} training crops" if train.crop else size
        raise ReconadError(f"loss.ssim_window={loss.ssim_window} is larger than the {seen}; "
                           f"use an odd window <= {_odd_at_most(trained)}")
    maps = score.map.split("+")
    if "ssim" in maps and score.ssim_window > side:
        raise ReconadError(f"score.ssim_window={score.ssim_window} is larger than the {size}; "
                           f"use an odd window <= {_odd_at_most(side)}")
    widest = side / SMOOTH_TRUNCATE
    if score.map != "none" and score.smooth_sigma > widest:
        raise ReconadError(f"score.smooth_sigma={score.smooth_sigma:g} smooths over more than "
                           f"the {size}; use a sigma <= {widest:g} pixels or 0")
    if "color" in maps and max(score.color_sigmas) > widest:
        raise ReconadError(f"score.color_sigmas={score.color_sigmas} reach past the {size}; "
                           f"use scales <= {widest:g} pixels")


def _odd_at_most(n: int) -> int:
    return n if n % 2 else n - 1
