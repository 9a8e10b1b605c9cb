"""The quality gate: is this field worth classifying?

A blurred, washed-out, noisy or empty field gives a confident-looking but meaningless
answer, so such frames are stored as *rejected* with reasons a technician can act on ("out of
focus": turn the fine focus; "overexposed": dim the lamp; "too noisy": more light, less gain)
instead of being classified. Figures are computed on the 224x224 model input, the scale the
thresholds were set at.

Sharpness is the contrast-normalised Laplacian energy after light denoising: the variance of
the Laplacian of the field smoothed with a Gaussian of sigma 1 px, divided by the smoothed
field's own variance (x1000). The old measure, the raw variance of the Laplacian, failed
twice: pixel noise inflated it (a field blurred at sigma 2 with noise sigma 5 measured
sharper than a clean one, and malignant fields were called negative), and it scaled with
contrast and cell density (at sigma 1 blur it rejected every Pro-B field but few Pre-B).
Smoothing at sigma 1 removes most pixel noise while keeping the cell edges defocus erases;
what noise survives the smoothing is predictable from the measured noise sigma and is
subtracted; dividing by the field's variance removes exposure and most of the dependence on
how many cells are in view. The limits are fitted per bundle by the converter from how the model's
accuracy falls as blur grows (``converter.gate``), stored in the manifest, and can be
overridden per device in ``[quality]``.

Noise is still checked, before focus, with Immerkaer's estimate (Fast Noise Variance
Estimation, 1996): the mean absolute response to a kernel that cancels smooth image
structure, scaled to a Gaussian sigma.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Mapping

import cv2
import numpy as np
from pydantic import Field

from edge.analysis.histogram import percentile_of_u8
from edge.analysis.segmentation import Segmentation
from edge.settings import Float, Settings


class QualityConfig(Settings):
    """Per-device overrides of the quality gate. Unset (the default), each limit is the one
    the converter fitted for the installed bundle (``edge.analysis.quality.GateLimits``); set one only
    after measuring this camera with ``blastscope-edge survey``."""

    min_focus: Annotated[Float, Field(ge=0)] | None = None  # sharpness (edge/analysis/quality.py), fitted from accuracy under blur
    max_clipped: Annotated[Float, Field(gt=0, le=1)] | None = None  # fraction of saturated pixels, fitted above every clean field
    max_noise: Annotated[Float, Field(gt=0)] | None = None  # pixel noise sigma (grey levels), fitted above every clean field
    max_border: Annotated[Float, Field(gt=0, le=1)] | None = None  # share of the field showing the field stop's dark surround
    min_brightness: Annotated[Float, Field(ge=0, lt=255)] | None = None



@dataclass(frozen=True)
class GateLimits:
    """The limits one pipeline applies: the bundle's fitted values, then the device's
    ``[quality]`` overrides. The defaults here apply only to a bundle without fitted limits."""

    min_focus: float = 5.0
    max_clipped: float = 0.6
    max_border: float = 0.013
    max_noise: float = 4.2
    min_brightness: float = 40.0

    @classmethod
    def resolve(cls, fitted: Mapping[str, Any] | None, overrides: QualityConfig = QualityConfig()) -> "GateLimits":
        """``fitted``: the manifest's ``quality_gate.limits``; an override set in the config wins."""
        values: dict[str, float] = {}
        for f in fields(cls):
            override = getattr(overrides, f.name, None)
            if override is not None:
                values[f.name] = float(override)
            elif fitted and f.name in fitted:
                values[f.name] = float(fitted[f.name])
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Quality:
    focus: float  # contrast-normalised Laplacian energy after light denoising (x1000)
    clipped_fraction: float  # pixels saturated in every channel
    brightness: float  # mean grey level
    noise: float = 0.0  # estimated pixel noise sigma (grey levels)
    border: float = 0.0  # fraction of near-black pixels: the field stop's dark surround in view
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}}


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's pixel-noise estimate of a grey image, in grey levels."""
    h, w = grey.shape
    response = cv2.filter2D(grey.astype(np.float32), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def _noise_gains() -> tuple[float, float]:
    """How much of a unit white noise's variance survives the smoothing (c0) and the
    smoothing plus Laplacian (c1): the sums of the squared impulse responses."""
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    smooth = cv2.GaussianBlur(impulse, (0, 0), 1.0)
    return float((smooth ** 2).sum()), float((cv2.Laplacian(smooth, cv2.CV_32F) ** 2).sum())


_SMOOTH_GAIN, _LAPLACIAN_GAIN = _noise_gains()


def sharpness(grey: np.ndarray, noise: float | None = None) -> float:
    """Contrast-normalised Laplacian energy of a lightly denoised grey image (x1000), with the
    part the measured pixel noise still contributes after smoothing subtracted, so a blurred,
    noisy field does not read as sharp."""
    noise = noise_sigma(grey) if noise is None else noise
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    variance = float(smooth.var()) - _SMOOTH_GAIN * noise ** 2
    if variance < 1e-6:
        return 0.0
    energy = float(cv2.Laplacian(smooth, cv2.CV_32F).var()) - _LAPLACIAN_GAIN * noise ** 2
    return 1000.0 * max(energy, 0.0) / variance


def border_fraction(grey: np.ndarray) -> float:
    """Share of pixels darker than a fifth of the background (the field's 90th percentile):
    the eyepiece's black surround. Stained nuclei stay above it; clean fields of the dataset
    have at most 0.33% of pixels below grey 40."""
    return float((grey < 0.2 * percentile_of_u8(grey, 90.0)).mean())


def measure_quality(field_rgb: np.ndarray, cfg: GateLimits) -> Quality:
    """Focus and exposure figures and the reasons, if any, to reject the field."""
    grey = cv2.cvtColor(field_rgb, cv2.COLOR_RGB2GRAY)
    noise = noise_sigma(grey)
    focus = sharpness(grey, noise)
    border = border_fraction(grey)
    # share of pixels saturated in all three channels (inRange: one pass, no boolean copies)
    clipped = cv2.countNonZero(cv2.inRange(field_rgb, (250, 250, 250), (255, 255, 255))) / (grey.shape[0] * grey.shape[1])
    brightness = float(grey.mean())
    reasons = []
    if clipped > cfg.max_clipped:
        reasons.append(f"overexposed: lower the lamp or the exposure, shade the eyepiece from room light, and analyse "
                       f"again ({clipped:.0%} of the field is saturated)")
    elif brightness < cfg.min_brightness:
        reasons.append(f"too dark: raise the lamp or open the diaphragm and analyse again (mean brightness {brightness:.0f})")
    elif border > cfg.max_border:
        reasons.append(f"field stop in view: centre the camera on the eyepiece and shade it from room light, then "
                       f"analyse again ({border:.0%} of the field is the dark surround)")
    elif noise > cfg.max_noise:
        reasons.append(f"too noisy: add light or lower the camera gain and analyse again (noise {noise:.1f}, "
                       f"limit {cfg.max_noise:g})")
    elif focus < cfg.min_focus:
        reasons.append(f"out of focus: turn the fine focus and analyse again (sharpness {focus:.1f}, needs {cfg.min_focus:.1f})")
    return Quality(focus, clipped, brightness, noise, border, reasons)


def cells_reason(segmentation: Segmentation) -> str | None:
    """The rejection reason when segmentation found no cells. A faintly stained field is not
    rejected: it is classified from the field itself, as in training (``Segmentation.faint``);
    rejecting it rejected 7% of Pro-B test fields and no other class."""
    if not segmentation.empty or segmentation.faint:
        return None
    return f"no cells in view: {segmentation.reason}"
