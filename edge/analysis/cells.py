"""White cells, one by one: the unit the model reads and a hematologist counts.

The field-level model read the smear's look (stain, background, red cells) instead of the
blasts. A cell model reads only what lies inside one white cell and a small margin, so this
module finds the white cells and cuts each one out at one physical scale:

1. **Magnification from the red cells.** Red cells are about 7.5 um across whatever the
   patient, and they fill most of a smear field, so the field's texture scale is theirs:
   the lag at which the autocorrelation of the field's unstained objects falls to 0.3 of its
   peak (the "ruler") grows with the magnification, whether the red cells touch, overlap or
   show pale centres. The converter records the training fields' median ruler; a field whose
   ruler is far from it was taken through another objective and is refused ("wrong
   magnification") instead of being read at the wrong size.
2. **White cells from the stain mask** (CIE-LAB 2-means on a*, ``edge.analysis.segmentation``):
   connected components, touching nuclei split by a watershed on the distance transform,
   platelets and stain debris dropped by size in micrometres, objects cut by the field's edge
   kept only when most of their area is inside.
3. **Crops at the canonical scale**: a square of ``crop_um`` around each cell resized to
   ``crop_px``, in grey with the cell's own contrast standardised (so neither the stain's hue
   nor its strength reaches the model), and the same crop with everything outside the
   cell's mask set to the crop's neutral level. Nothing outside the cell and its margin is
   kept, so the background of the smear cannot carry the class.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from edge.analysis.histogram import percentile_u8
from edge.analysis.labels import BENIGN, LABELS, NOT_A_WHITE_CELL
from edge.analysis.morphology import element as structuring_element
from edge.analysis.segmentation import Segmentation, from_known_keys

#: Red-cell diameter (um) used as the ruler: normal erythrocytes measure 7-8 um.
RBC_DIAMETER_UM = 7.5


#: The ways ``detect_cells`` cuts a stained object into cells (``CellParams.partition``).
PARTITIONS = ("watershed", "nearest_core")


@dataclass(frozen=True)
class CellParams:
    """Every parameter of cell detection and cropping; recorded in the bundle manifest so the
    device cuts cells exactly as training did."""

    #: Pixels per micrometre the model was trained at: the training fields' red cells
    #: measure about 17 px across at 224 px (7.5 um).
    model_px_per_um: float = 2.27
    #: The training fields' median ruler (``measure_magnification``), recorded by the converter.
    model_ruler_px: float = 7.6
    #: Within this factor of the model's scale a field is read at the model's scale: the
    #: red-cell ruler scatters that much between fields of one microscope (96% of the
    #: training fields lie within it).
    rescale_beyond: float = 1.35
    #: Beyond this factor the field is refused ("wrong magnification"); between the two it
    #: is cut at its own measured scale, which brings its cells to the model's size.
    max_scale_factor: float = 1.6
    #: Stained objects smaller than this equivalent diameter are platelets or debris.
    min_cell_um: float = 5.0
    #: Larger than this is a clump or stain precipitate, not one cell.
    max_cell_um: float = 28.0
    #: Side of the square cut around each cell, and its side in model pixels.
    crop_um: float = 24.0
    crop_px: int = 96
    #: A cell cut by the field's edge is kept when at least this share of its box is inside.
    min_inside: float = 0.7
    #: Orientations each cell is read in (``edge.model.views``): 8 reads it in every
    #: orientation of the square; 1, the default of bundles built before views, upright only.
    #: The calibration is fitted on the views the bundle records.
    views: int = 1
    #: How a stained object holding several nuclei is cut into cells. "watershed" (bundles
    #: built before issue 32): flooded from each nucleus's core over the distance map, which
    #: can hand a cell's rim to its neighbour, so one box spans two touching cells (37 of 144
    #: Pre-B fields had overlapping boxes) and a cell votes twice. "nearest_core": every
    #: stained pixel goes to the core nearest to it, so each box holds one nucleus and what
    #: surrounds it. Part of the bundle: the model is calibrated on the cells it was cut into.
    partition: str = "watershed"

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise ValueError(f"cell partition {self.partition!r}: one of {', '.join(PARTITIONS)}")
        if not 1 <= self.views <= 8:
            raise ValueError(f"cell views {self.views}: a cell is read in 1 to 8 orientations")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellParams":
        return from_known_keys(cls, data, "cell")


@dataclass(frozen=True)
class Magnification:
    """The field's scale, measured from its red cells: the ruler in pixels (None when the
    field has too little unstained texture to measure)."""

    ruler_px: float | None

    def ratio(self, params: "CellParams") -> float | None:
        """This field's scale over the model's (2: cells look twice as large)."""
        return None if self.ruler_px is None else self.ruler_px / params.model_ruler_px


@dataclass(frozen=True)
class Cell:
    """One white cell: where it is (field pixels) and how large (micrometres)."""

    x: int  # box in the field, pixels: x, y, width, height
    y: int
    w: int
    h: int
    area_px: int
    diameter_um: float
    centre: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"box": [self.x, self.y, self.w, self.h], "area_px": self.area_px,
                "diameter_um": round(self.diameter_um, 1), "centre": [round(c, 1) for c in self.centre]}


#: The autocorrelation level that defines the ruler, and the longest lag looked at.
RULER_LEVEL = 0.3
MAX_RULER_PX = 120
#: Scale (px, 224-px field) of the slow shading removed before the ruler is read.
RULER_HIGHPASS_PX = 24.0


def measure_magnification(rgb: np.ndarray, stained: np.ndarray, element: str = "ellipse") -> Magnification:
    """The red-cell ruler of a normalised field: how far (px) its unstained texture stays
    correlated with itself.

    The image is the darkness below the background (the red cells), with the stained cells
    and their rim replaced by the median so white cells do not set the scale. Its
    autocorrelation (FFT, zero-padded) is averaged over directions; the ruler is the lag where
    it first falls to ``RULER_LEVEL``, interpolated between pixels. ``element`` is the
    segmentation's structuring element (``SegmentationParams.element``)."""
    lightness8 = cv2.GaussianBlur(cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 0), (3, 3), 0)
    rim = cv2.dilate(stained.astype(np.uint8), structuring_element(element, 7)) > 0
    if rim.all():
        return Magnification(None)
    # lightness is 8-bit, so its 90th percentile and the unstained part's median are read off
    # histograms (exactly np.percentile's linear rule), several times faster than sorting
    bright = percentile_u8(np.bincount(lightness8.ravel(), minlength=256), 90.0)
    darkness = np.clip(bright - lightness8.astype(np.float32), 0, None)
    # darkness falls as lightness rises, so its median is the lightness median's mirror image
    darkness[rim] = max(bright - percentile_u8(np.bincount(lightness8[~rim], minlength=256), 50.0), 0.0)
    # a vignette or uneven lamp is a slope across the field, not red-cell texture: take away
    # what varies more slowly than a few red cells
    darkness -= _slow_shading(darkness)
    if float(np.abs(darkness).max()) < 1.0:  # no texture at all: a blank field
        return Magnification(None)
    profile = _radial_autocorrelation(darkness)
    below = np.flatnonzero(profile < RULER_LEVEL)
    if not len(below) or below[0] == 0:
        return Magnification(None)
    k = int(below[0])
    fraction = (profile[k - 1] - RULER_LEVEL) / max(profile[k - 1] - profile[k], 1e-9)
    return Magnification(float(k - 1 + fraction))


#: The slow shading is blurred at this fraction of the field's resolution: a Gaussian of
#: RULER_HIGHPASS_PX keeps nothing finer than a few red cells, so averaging blocks of this
#: many pixels first changes it little, and the blur's cost falls with the square.
SHADING_SUBSAMPLE = 4


def _slow_shading(image: np.ndarray) -> np.ndarray:
    """``image`` blurred by a Gaussian of ``RULER_HIGHPASS_PX``, computed on a copy reduced
    ``SHADING_SUBSAMPLE`` times and brought back by linear interpolation."""
    h, w = image.shape
    f = SHADING_SUBSAMPLE
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), RULER_HIGHPASS_PX / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _radial_autocorrelation(image: np.ndarray) -> np.ndarray:
    """The linear autocorrelation of ``image`` averaged over directions, for lags 0 to
    ``MAX_RULER_PX - 1``, normalised to 1 at lag 0.

    Zero-padding by the longest lag (not by the whole side) is enough for a linear, not
    circular, correlation at those lags, and only the lags inside that radius are averaged."""
    h, w = image.shape
    size = (cv2.getOptimalDFTSize(h + MAX_RULER_PX), cv2.getOptimalDFTSize(w + MAX_RULER_PX))
    padded = np.zeros(size, np.float32)
    padded[:h, :w] = image
    # OpenCV's real DFT rather than numpy's: the same correlation, in a fraction of the time
    spectrum = cv2.dft(padded)
    auto = cv2.idft(cv2.mulSpectrums(spectrum, spectrum, 0, conjB=True), flags=cv2.DFT_REAL_OUTPUT)
    flat, radius, counts = _lag_rings(size)
    profile = np.bincount(radius, auto.ravel()[flat], minlength=MAX_RULER_PX) / counts
    return profile / profile[0]


@functools.lru_cache(maxsize=4)
def _lag_rings(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an autocorrelation of ``size`` (lag 0 at [0, 0], negative lags wrapped): the flat
    indices of the lags closer than ``MAX_RULER_PX``, their whole-pixel radius and how many
    lags each radius has."""
    lags = np.arange(-(MAX_RULER_PX - 1), MAX_RULER_PX)
    dy, dx = np.meshgrid(lags, lags, indexing="ij")
    radius = np.hypot(dy, dx).astype(np.int64)
    keep = radius < MAX_RULER_PX
    flat = (dy[keep] % size[0]) * size[1] + (dx[keep] % size[1])
    return flat, radius[keep], np.maximum(np.bincount(radius[keep], minlength=MAX_RULER_PX), 1)


UNMEASURABLE = ("magnification cannot be measured: no red cells to measure it by; use the objective the device "
                "was set up for and a part of the smear where red cells lie side by side")
WRONG_MAGNIFICATION = ("wrong magnification: use the objective the device was set up for (the red cells look "
                       "{ratio:.1f} times the size the model reads)")


def working_scale(magnification: Magnification, params: CellParams = CellParams()) -> tuple[float, str | None]:
    """Pixels per micrometre to cut this field's cells at, and why it is refused (or None).

    The ruler scatters between fields of one microscope (denser smears read longer), so
    within ``rescale_beyond`` of the model's scale the field is cut at the model's own scale;
    beyond it, at the field's measured scale; beyond ``max_scale_factor`` it is refused. It
    reads enlargement short (an enlarged field reads less enlarged than it is; the
    magnification tests measure by how much), so it refuses a much stronger objective rather
    than correcting a small change, and the eyepiece's vignette and slow shading barely move it (removed before it
    is read)."""
    ratio = magnification.ratio(params)
    if ratio is None:
        return params.model_px_per_um, UNMEASURABLE
    if not 1.0 / params.max_scale_factor <= ratio <= params.max_scale_factor:
        return params.model_px_per_um * ratio, WRONG_MAGNIFICATION.format(ratio=ratio)
    if 1.0 / params.rescale_beyond <= ratio <= params.rescale_beyond:
        return params.model_px_per_um, None
    return params.model_px_per_um * ratio, None


@functools.lru_cache(maxsize=8)
def _disc_rectangles(size: int, element: str) -> tuple[tuple[int, int], ...]:
    """The structuring element ``element`` of odd ``size`` as a union of centred rectangles
    (width, height): one per distinct row width, as tall as the rows at least that wide. Both
    elements of ``edge.analysis.morphology`` are convex and symmetric top to bottom, which
    this needs."""
    widths = structuring_element(element, size).sum(axis=1)
    return tuple((int(w), int((widths >= w).sum())) for w in sorted(set(widths[widths > 0].tolist())))


def dilate_disc(image: np.ndarray, size: int, element: str = "ellipse") -> np.ndarray:
    """``cv2.dilate`` with the structuring element ``element`` of odd ``size``, exactly, as the maximum of
    dilations by the rectangles the disc is the union of: OpenCV dilates by a rectangle
    separably, row then column, while a disc it visits element by element."""
    out = None
    for width, height in _disc_rectangles(size, element):
        grown = cv2.dilate(image, cv2.getStructuringElement(cv2.MORPH_RECT, (width, height)))
        out = grown if out is None else np.maximum(out, grown, out=out)
    return image.copy() if out is None else out


def detect_cells(segmentation: Segmentation, px_per_um: float, params: CellParams = CellParams()) -> tuple[list[Cell], np.ndarray]:
    """White cells of a field and a label image (0 background, i+1 for cell i).

    Touching nuclei are split by a watershed seeded at the distance transform's peaks that
    stand at least 40% of a minimum cell radius above their saddle; objects outside the
    size range are dropped, as are cells mostly outside the field."""
    mask = segmentation.mask.astype(np.uint8)
    h, w = mask.shape
    if not mask.any():
        return [], np.zeros((h, w), np.int32)
    min_r_px = 0.5 * params.min_cell_um * px_per_um
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    seeds = (distance >= max(1.5, 0.8 * min_r_px)).astype(np.uint8)
    # one seed per nucleus: the core of each object shrunk to its thickest part
    core = (distance >= 0.5 * dilate_disc(distance, int(4 * min_r_px) | 1, segmentation.element)) & (seeds > 0)
    n_seeds, markers = cv2.connectedComponents(core.astype(np.uint8), connectivity=8)
    if params.partition == "nearest_core":
        markers = _nearest_core(markers, mask)
    else:
        markers = markers.astype(np.int32) + 1
        markers[mask == 0] = 0
        unknown = (mask > 0) & ~core
        markers[unknown] = 0
        markers[mask == 0] = 1  # background marker
        shade = cv2.merge([(255 - np.clip(distance * 255 / max(distance.max(), 1), 0, 255)).astype(np.uint8)] * 3)
        cv2.watershed(shade, markers)
    cells: list[Cell] = []
    min_area = np.pi * (0.5 * params.min_cell_um * px_per_um) ** 2
    max_area = np.pi * (0.5 * params.max_cell_um * px_per_um) ** 2
    half = 0.5 * params.crop_um * px_per_um
    # every region's area, centre and box in one pass over its pixels, not a full-field
    # mask per seed
    ys, xs = np.nonzero((markers >= 2) & (mask > 0))
    ks = markers[ys, xs].astype(np.intp)
    n = n_seeds + 2
    area = np.bincount(ks, minlength=n)
    sum_y, sum_x = np.bincount(ks, ys, minlength=n), np.bincount(ks, xs, minlength=n)
    y_min, x_min = np.full(n, h), np.full(n, w)
    y_max, x_max = np.full(n, -1), np.full(n, -1)
    np.minimum.at(y_min, ks, ys)
    np.minimum.at(x_min, ks, xs)
    np.maximum.at(y_max, ks, ys)
    np.maximum.at(x_max, ks, xs)
    renumber = np.zeros(n, np.int32)
    for k in range(2, n_seeds + 1):
        if not min_area <= area[k] <= max_area:
            continue
        cy, cx = float(sum_y[k] / area[k]), float(sum_x[k] / area[k])
        inside = (min(cx + half, w) - max(cx - half, 0)) * (min(cy + half, h) - max(cy - half, 0)) / (2 * half) ** 2
        if inside < params.min_inside:
            continue
        x0, y0 = int(x_min[k]), int(y_min[k])
        cells.append(Cell(x0, y0, int(x_max[k]) - x0 + 1, int(y_max[k]) - y0 + 1, int(area[k]),
                          float(2.0 * np.sqrt(area[k] / np.pi) / px_per_um), (cx, cy)))
        renumber[k] = len(cells)
    labels = np.zeros((h, w), np.int32)
    labels[ys, xs] = renumber[ks]
    return cells, labels


def _nearest_core(cores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Markers in ``detect_cells``' numbering (1 background, core k at k + 1) with every stained
    pixel given to the core nearest to it (Euclidean; OpenCV's labelled distance transform)."""
    _, nearest = cv2.distanceTransformWithLabels((cores == 0).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(cores > 0)
    table = np.zeros(int(nearest.max()) + 1, np.int32)
    table[nearest[ys, xs]] = cores[ys, xs]  # each zero pixel's label names one core pixel
    out = table[nearest] + 1
    out[mask == 0] = 1
    return out.astype(np.int32)


#: How far around a cell's own mask the first input keeps the picture (micrometres): the
#: cell's edge and a rim of what touches it, not the smear around it.
MARGIN_UM = 1.5


def grey_standardised(grey8: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A crop's grey (``cv2.COLOR_RGB2GRAY``) with the cell's own contrast standardised: the
    darkest 2% of ``region`` to 0 and its brightest 2% to 255. Hue never reaches the model,
    and a darker or paler stain of the same cell gives nearly the same picture."""
    # grey is 8-bit, so the percentiles are read off its histogram (np.percentile's linear rule)
    hist = np.bincount((grey8[region] if region.any() else grey8).ravel(), minlength=256)
    low, high = percentile_u8(hist, 2.0), percentile_u8(hist, 98.0)
    # the stretch is a function of the grey level alone: computed for the 256 levels and
    # looked up, the same numbers as computing it pixel by pixel
    levels = np.arange(256, dtype=np.float64)
    table = np.clip((levels - low) * (255.0 / max(high - low, 8.0)), 0, 255).astype(np.uint8)
    return cv2.LUT(grey8, table)


@dataclass(frozen=True)
class CellCrops:
    """Each cell cut out at the model's scale: the colour crop and two masks in crop pixels.
    Kept in colour so training can jitter the stain before ``model_inputs`` takes it away."""

    rgb: np.ndarray  # (N, side, side, 3) uint8
    own: np.ndarray  # (N, side, side) bool: the cell's own mask
    near: np.ndarray  # (N, side, side) bool: the cell and a MARGIN_UM rim

    def __len__(self) -> int:
        return len(self.rgb)


def cut_cells(rgb: np.ndarray, labels: np.ndarray, cells: list[Cell], px_per_um: float,
              params: CellParams = CellParams(), element: str = "ellipse") -> CellCrops:
    """A square of ``crop_um`` around each cell, resized to ``crop_px``; the rim around each
    cell's mask is grown with the segmentation's structuring element ``element``."""
    side = params.crop_px
    crops = np.zeros((len(cells), side, side, 3), np.uint8)
    own = np.zeros((len(cells), side, side), bool)
    half = 0.5 * params.crop_um * px_per_um
    scale = side / (2 * half)
    margin = max(1, int(round(MARGIN_UM * params.crop_px / params.crop_um)))
    ring = structuring_element(element, 2 * margin + 1)
    # the label image warped per cell (nearest neighbour, so labels are not mixed), then each
    # cell's own label picked in its crop: one small warp per cell, not a whole-field mask
    label_image = labels.astype(np.float32)
    for i, cell in enumerate(cells):
        cx, cy = cell.centre
        # an affine warp centres the crop exactly; outside the field it repeats the border
        m = np.array([[scale, 0, side / 2 - scale * cx], [0, scale, side / 2 - scale * cy]], np.float32)
        crops[i] = cv2.warpAffine(rgb, m, (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
        own[i] = cv2.warpAffine(label_image, m, (side, side), flags=cv2.INTER_NEAREST) == i + 1
    near = np.stack([cv2.dilate(o.astype(np.uint8), ring) > 0 for o in own]) if len(cells) else own.copy()
    return CellCrops(crops, own, near)


def model_inputs(crops: CellCrops) -> tuple[np.ndarray, np.ndarray]:
    """The model's two inputs per cell, ``(N, side, side, 3)`` uint8 each.

    Input 1: the cell and a ``MARGIN_UM`` rim in standardised grey, everything further out
    white (the standardised background). Input 2: the cell's own mask applied, the rest
    black, as the segmented image of the original design. Grey is repeated over 3 channels
    to keep MobileNetV2's ImageNet start."""
    n, side = len(crops), crops.rgb.shape[1]
    if n == 0:
        return np.zeros_like(crops.rgb), np.zeros_like(crops.rgb)
    # colour to grey is per pixel, so the crops stacked into one image convert in one call
    greys = cv2.cvtColor(crops.rgb.reshape(n * side, side, 3), cv2.COLOR_RGB2GRAY).reshape(n, side, side)
    first = np.empty((n, side, side), np.uint8)
    second = np.empty((n, side, side), np.uint8)
    for i in range(n):
        grey = grey_standardised(greys[i], crops.near[i])
        first[i] = np.where(crops.near[i], grey, 255)
        second[i] = np.where(crops.own[i], grey, 0)
    originals = np.repeat(first[..., None], 3, axis=3)
    masked = np.repeat(second[..., None], 3, axis=3)
    return originals, masked


NO_WHITE_CELLS = "no white cells in view: move the stage to an area of the smear with white cells"
#: The same refusal for a field whose stain is faint (``Segmentation.faint``): real malignant
#: fields of the dataset are that faint, and a second split of their stained pixels would find
#: their white cells but also the pale ghosts of cells in fields with none (docs/cells.md), so
#: the device refuses them and says what may be wrong.
FAINT_STAIN = ("no white cells in view, and the stain is faint: if white cells are in view, the stain is too faint "
               "to find them (check the stain and the lamp); if not, move the stage to an area with white cells")


@dataclass(frozen=True)
class CellCall:
    """One cell as the model read it: its class, probabilities and how familiar it looked."""

    cell: Cell
    label: str  # one of LABELS
    probabilities: dict[str, float]  # raw, in LABELS order
    distance: float  # Mahalanobis distance of its embedding from the training cells
    familiar: bool  # False: out of distribution, left out of the field call
    appearance: float | None = None  # distance of its appearance numbers (edge.analysis.appearance)

    @property
    def counted(self) -> bool:
        """Whether it counts as a white cell: familiar, and not read as "not a white cell"."""
        return self.counts(self.label, self.familiar)

    @staticmethod
    def counts(label: str, familiar: bool) -> bool:
        """The rule of ``counted``, for a reading not yet made a ``CellCall`` (the pipeline pools
        a provisional reading before it decides which views to read)."""
        return familiar and label != NOT_A_WHITE_CELL

    def to_dict(self) -> dict[str, Any]:
        out = {**self.cell.to_dict(), "label": self.label, "familiar": self.familiar,
               "distance": round(self.distance, 2),
               "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}}
        if self.appearance is not None:
            out["appearance_distance"] = round(self.appearance, 2)
        return out


def four_class(cell_probabilities: np.ndarray, cell_labels: tuple[str, ...]) -> np.ndarray:
    """Cells' probabilities over ``cell_labels`` as the four field labels (``LABELS``): every
    benign white cell (lymphoid, granulocyte, monocyte, erythroblast) is "benign", each blast
    subtype itself, and "not a white cell" left out before renormalising. The identity for a
    4-class model. This is what the field's pooled call and its calibration read."""
    p = np.asarray(cell_probabilities, np.float64)
    if tuple(cell_labels) == LABELS:
        return p
    out = np.zeros((len(p), len(LABELS)))
    for j, label in enumerate(cell_labels):
        if label == NOT_A_WHITE_CELL:
            continue
        out[:, LABELS.index(label) if label in LABELS else LABELS.index(BENIGN)] += p[:, j]
    return out / np.maximum(out.sum(1, keepdims=True), 1e-9)


def pool_share(cell_probabilities: np.ndarray) -> np.ndarray:
    """A differential's field probabilities from its cells': the arithmetic mean of the cells'
    four-label probabilities, so the malignant share is the expected share of blasts among
    the field's white cells, as a hematologist counts them.

    The geometric mean suits a 4-class model, whose every cell carried the field's label in
    training; a differential reads a malignant field's neutrophil as a neutrophil, and in a
    geometric mean that one confident normal cell would veto the field's blasts."""
    p = np.asarray(cell_probabilities, np.float64).mean(0)
    return p / p.sum()


def pool(cell_probabilities: np.ndarray) -> np.ndarray:
    """The field's raw class probabilities from its cells': the renormalised geometric mean.

    Every cell of a field carried the field's label in training, so each cell is one
    noisy vote; the geometric mean (mean log-probability) lets many consistent cells outweigh
    an odd one, and a single confident cell cannot decide a field alone."""
    logp = np.log(np.maximum(np.asarray(cell_probabilities, np.float64), 1e-6)).mean(0)
    p = np.exp(logp - logp.max())
    return p / p.sum()
