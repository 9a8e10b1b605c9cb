"""The eyepiece's field of view: a bright disc inside a dark vignette.

A camera on an eyepiece records the round field stop with black around it. The model was
trained on fields without that border, so the largest square centred in the disc is cut
out before resizing. Frames without a vignette (a C-mount camera, an uploaded image)
pass through unchanged, cut to their centre square.

Stray light (room light leaking between eyepiece and camera) brightens part of the black
surround. The old detector compared the disc with the *brightest* corner and took the
smallest circle enclosing the bright region, so a lit corner hid the disc (14 of 67 frames
of the suite's stray-light condition) or swelled the circle into the haze. It now needs the
two darkest corners to be dark and thresholds between the darkest corner and the centre.
When the bright region is not round (haze attached to the disc) it takes the largest circle
*inscribed* in the region, dark cells inside it filled, instead of the enclosing one: haze
widens the region but not the disc inside it. If the
disc is still missed, the quality gate rejects a field that shows the dark surround
(``edge.analysis.quality``, "field stop in view") instead of classifying it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_WORK_SIDE = 256  # detection runs on a downscaled copy: the disc is large and smooth
_EDGE_MARGIN = 0.97  # stay clear of the field stop's soft, darkened edge
_ROUND = 0.9  # a bright region filling less of its enclosing circle is a disc with haze attached


@dataclass(frozen=True)
class FieldOfView:
    cx: float
    cy: float
    radius: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the frame


def find_field_of_view(rgb: np.ndarray) -> FieldOfView | None:
    """The eyepiece disc, or None when the frame has no dark vignette around a bright field."""
    h, w = rgb.shape[:2]
    scale = _WORK_SIDE / max(h, w)
    small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    k = max(2, round(0.08 * min(sh, sw)))
    corners = [small[:k, :k], small[:k, -k:], small[-k:, :k], small[-k:, -k:]]
    levels = sorted(float(c.mean()) for c in corners)
    centre_level = float(small[sh * 2 // 5 : sh * 3 // 5, sw * 2 // 5 : sw * 3 // 5].mean())
    if centre_level < 40 or levels[1] > 0.35 * centre_level:
        return None
    _, bright = cv2.threshold(small, (levels[0] + centre_level) / 2, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    (cx, cy), r = cv2.minEnclosingCircle(outline)
    if cv2.contourArea(outline) < _ROUND * np.pi * r * r:  # haze attached: not a disc any more
        region = np.zeros_like(bright)  # the bright region, with dark cells inside it filled
        cv2.drawContours(region, [outline], -1, 1, thickness=cv2.FILLED)
        _, r, _, (cx, cy) = cv2.minMaxLoc(cv2.distanceTransform(region, cv2.DIST_L2, 5))
        cx, cy, r = cx + 0.5, cy + 0.5, r + 0.5
    cx, cy, r = cx / scale, cy / scale, r / scale
    half = _EDGE_MARGIN * r / np.sqrt(2.0)
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    x1, y1 = min(w, round(cx + half)), min(h, round(cy + half))
    side = min(x1 - x0, y1 - y0)
    if side < 32:
        return None
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x0, y0 = min(max(0, x0), w - side), min(max(0, y0), h - side)
    return FieldOfView(cx, cy, r, (x0, y0, x0 + side, y0 + side))


def centre_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square: what is classified when no eyepiece disc is found. Squashing
    a 4:3 frame into the model's square input distorts every cell the model was trained on."""
    h, w = rgb.shape[:2]
    if h == w:
        return rgb
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return rgb[y0:y0 + side, x0:x0 + side]


def crop_to_field(rgb: np.ndarray) -> tuple[np.ndarray, FieldOfView | None]:
    """The square inside the eyepiece disc, else the centre square (``None``: no disc found)."""
    fov = find_field_of_view(rgb)
    if fov is None:
        return centre_square(rgb), None
    x0, y0, x1, y1 = fov.box
    return rgb[y0:y1, x0:x1], fov
