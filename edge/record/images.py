"""A field's pictures: the stored JPEG, the overlay a phone shows, and the fingerprint that
tells a field taken twice. Each file is fsynced, and its folder, before the row that names it
is committed (``edge.record.store``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.analysis.labels import is_blast


#: Box colours of a cell bundle's overlay (the page's legend names them; the number is the
#: cell's index): blasts red, benign lymphoid green, other white cells of the differential blue,
#: what is not counted (unrecognised, or not a white cell) grey.
CELL_COLOURS = {"blast": (220, 40, 40), "benign": (0, 170, 60), "other": (40, 110, 230), "unfamiliar": (140, 140, 140)}


def overlay_image(field_rgb: np.ndarray, mask: np.ndarray, side: int = 448, cells: list | None = None) -> np.ndarray:
    """The field enlarged for a phone screen with the segmented cells outlined in green, or,
    for a cell bundle, each white cell boxed in its class's colour and numbered."""
    big = cv2.resize(field_rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    out = big.copy()
    if cells is None:
        big_mask = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # amber, not green: green is the colour of a benign cell's box
        cv2.drawContours(out, contours, -1, (235, 160, 0), 2)
        return out
    scale = side / field_rgb.shape[1]
    for n, call in enumerate(cells, start=1):
        c = call.cell
        kind = ("unfamiliar" if not call.counted else "benign" if call.label == "benign" else
                "blast" if is_blast(call.label) else "other")
        x0, y0 = int(c.x * scale), int(c.y * scale)
        x1, y1 = int((c.x + c.w) * scale), int((c.y + c.h) * scale)
        cv2.rectangle(out, (x0, y0), (x1, y1), CELL_COLOURS[kind], 2)
        cv2.putText(out, str(n), (x0 + 3, max(14, y0 + 15)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 3)
        cv2.putText(out, str(n), (x0 + 3, max(14, y0 + 15)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, CELL_COLOURS[kind], 1)
    return out


#: Bits of the 256-bit difference hash two fields may differ by and still be one capture. On
#: 600 fields of all-pbs-224 (``blastscope`` issue 34, measured by hand in the session that chose
#: it): different fields differ in 127 bits at the median and 92 at the 0.01th percentile (the
#: rare pairs below are the dataset's own duplicate frames); the same field taken again (noise,
#: a 2-pixel shift, 5% more light, JPEG 80) in 29 at the mean and 49 at the most.
SAME_FIELD_BITS = 64


def field_hash(rgb: np.ndarray) -> str:
    """A perceptual (difference) hash of a field: whether each of 16x16 cells of its grey image
    is brighter than its left neighbour, 256 bits as 64 hex digits. Two captures of one area
    give nearly the same bits; byte-identical images the same."""
    grey = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (17, 16), interpolation=cv2.INTER_AREA)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return np.packbits(bits).tobytes().hex()


def same_field(a: str, b: str) -> bool:
    return len(a) == len(b) and bin(int(a, 16) ^ int(b, 16)).count("1") <= SAME_FIELD_BITS


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not leave temp files behind
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
