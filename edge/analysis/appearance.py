"""What a white cell looks like, in a few numbers that a change of stain, optics or camera moves.

The cell model's embedding is trained to tell the four classes apart, so it keeps little of
what does not help that: a cell with its lightness turned inside out, a cell of uniform
grey or one with shuffled pixels lands among the training cells' embeddings and is read
with confidence. These numbers describe the cell the way a technician would notice it is
odd (its size, its stain's colour and strength, a nucleus darker than its cytoplasm, a
smooth or grainy texture, a round or ragged outline); ``edge.model.ood`` measures how far a
cell's numbers lie from the training cells'.

They are read from the colour crop of the normalised field (``edge.analysis.cells.cut_cells``),
before the crop is turned grey for the model, and from the cell's own mask, so the device
and the converter compute them from the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.analysis.cells import CellCrops, CellParams

#: The numbers, in the order of a feature vector (recorded in the bundle, checked on load).
FEATURES = ("diameter_um", "lightness", "red_green", "yellow_blue", "lightness_spread", "core_minus_rim",
            "roughness", "solidity", "darker_is_redder", "darker_is_bluer", "lightness_skew")


#: The row of a cell too small to measure (under 4 mask pixels): far from every training
#: cell, so such a field is refused; never fitted on (``edge.model.ood.fit_appearance``).
UNMEASURED = 1e6

#: The scale at which lightness and colour are compared: JPEG and a Bayer camera carry colour
#: at about half the resolution of lightness, so compared pixel by pixel a compressed field's
#: stain looks less tied to its darkness than it is; blurred to this scale it does not.
STAIN_SCALE_UM = 0.75


def features(crops: CellCrops, params: CellParams) -> np.ndarray:
    """``(N, len(FEATURES))`` float64: one row per cell of ``crops``."""
    n = len(crops)
    out = np.zeros((n, len(FEATURES)), np.float64)
    if n == 0:
        return out
    um_per_px = params.crop_um / params.crop_px
    # colour conversion is per pixel, so the crops stacked into one image convert in one call
    side = crops.rgb.shape[1]
    labs = cv2.cvtColor(crops.rgb.reshape(n * side, side, 3), cv2.COLOR_RGB2LAB).reshape(crops.rgb.shape)
    for i in range(n):
        out[i] = _cell_features(labs[i], crops.own[i], um_per_px, STAIN_SCALE_UM / um_per_px)
    return out


def _cell_features(lab8: np.ndarray, own: np.ndarray, um_per_px: float, stain_sigma_px: float) -> np.ndarray:
    """One cell's row, from its crop in 8-bit CIE-LAB (``cv2.COLOR_RGB2LAB``) and its mask."""
    # means and spreads over a mask are taken with OpenCV's masked reductions: the same
    # figures as indexing the pixels out with numpy, without copying them for every cell
    mask8 = own.astype(np.uint8)
    area = cv2.countNonZero(mask8)
    if area < 4:  # nothing to measure: a row no training cell is near
        return np.full(len(FEATURES), UNMEASURED)
    lab = lab8.astype(np.float32)
    lightness = lab[..., 0]
    mean, std = cv2.meanStdDev(lab, mask=mask8)
    mean, spread = mean.ravel(), float(std[0, 0])
    # the core is the inner half of the cell by distance to its edge; a stained white cell's
    # nucleus makes it darker than the cell's outer ring
    depth = cv2.distanceTransform(mask8, cv2.DIST_L2, 3)
    core = (depth >= 0.5 * cv2.minMaxLoc(depth)[1]).astype(np.uint8)
    ring = mask8 & (1 - core)
    core_minus_rim = (cv2.mean(lightness, core)[0] - cv2.mean(lightness, ring)[0]) if cv2.countNonZero(ring) else 0.0
    # grain: the mean fine-scale second derivative inside the cell (its edge left out), in
    # units of the cell's own lightness spread
    interior = cv2.erode(mask8, np.ones((3, 3), np.uint8))
    laplacian = np.abs(cv2.Laplacian(lightness, cv2.CV_32F, ksize=3))
    roughness = cv2.mean(laplacian, interior)[0] / max(spread, 1.0) if cv2.countNonZero(interior) else 0.0
    contours, _ = cv2.findContours(mask8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(contours))) if contours else 0.0
    solidity = min(area / hull, 1.0) if hull > 0 else 1.0
    # a stain colours the nucleus and its darkness together: inside a stained cell the darker
    # pixels are the redder (a*) and bluer (low b*) ones; a cell whose lightness does not go
    # with its colour was not stained the way the training cells were
    coarse = cv2.GaussianBlur(lab, (0, 0), stain_sigma_px)[own].astype(np.float64)
    redder, bluer = (_correlation(-coarse[:, 0], coarse[:, k]) for k in (1, 2))
    centred = lightness[own].astype(np.float64) - mean[0]
    skew = float(np.mean(centred ** 3) / max(spread, 1.0) ** 3)
    return np.array([2.0 * np.sqrt(area / np.pi) * um_per_px, *mean, spread, core_minus_rim,
                     roughness, solidity, redder, -bluer, skew])


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, 0 where either side does not vary (a uniform cell)."""
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = float(np.sqrt(np.dot(dx, dx) / len(x))), float(np.sqrt(np.dot(dy, dy) / len(y)))
    if sx < 1e-6 or sy < 1e-6:
        return 0.0
    return float(np.dot(dx, dy) / len(x) / (sx * sy))
