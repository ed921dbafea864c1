"""Technical quality scores of an image, each in [0, 1]: sharpness, brightness and contrast.

All three are computed on the BT.601 luma (0..255) of the pixels they are given, i.e. on the
decoder's working image (shorter side reduced to the working side, never upscaled):

- brightness = mean luma / 255 (0 black, 1 white).
- contrast = RMS contrast: the standard deviation of luma / 127.5, the largest standard
  deviation 0..255 values can have (half black, half white), so it is exactly within [0, 1].
- sharpness = v / (v + 100), with v the variance of the 4-neighbour Laplacian of luma (the
  usual "variance of the Laplacian" focus measure). 100 is the customary cut-off between
  blurred and sharp photos for this measure, so 0.5 is that cut-off; the hyperbola saturates
  smoothly (v=400 -> 0.8, v=900 -> 0.9). Measured on scikit-image's sharp photos: 0.80-0.95
  (chelsea 0.80, astronaut 0.90, coins 0.95); the same photos after a Gaussian blur of sigma
  1 px: 0.18-0.48, sigma 2 px: below 0.1; the motion-blurred `clock`: 0.20. Caveats: it
  depends on resolution (a reduced image looks sharper), and noise or fine texture (grass,
  gravel) reads as sharpness.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dupify.analysis.pixels import luma

SHARPNESS_HALF_POINT = 100.0
_MAX_LUMA_STD = 127.5


def laplacian_variance(grey: npt.NDArray[np.float32]) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels (0 for tiny images)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * centre
    return float(laplacian.var(dtype=np.float64))


def measure_quality(pixels: npt.NDArray[np.uint8]) -> dict[str, float]:
    """`{"sharpness", "brightness", "contrast"}` of HxWx3 uint8 RGB pixels, each in [0, 1]."""
    grey = luma(pixels)
    variance = laplacian_variance(grey)
    return {
        "sharpness": variance / (variance + SHARPNESS_HALF_POINT),
        "brightness": min(1.0, max(0.0, float(grey.mean(dtype=np.float64)) / 255.0)),
        "contrast": min(1.0, float(grey.std(dtype=np.float64)) / _MAX_LUMA_STD),
    }
