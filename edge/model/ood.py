"""Refusing cells unlike those the model was trained on.

A classifier answers for every input, including a cell from another laboratory's stain,
camera or microscope that it has never seen. Two checks, each a Mahalanobis distance from
the training cells with a limit fitted so that the capture-condition suite's benign
perturbations of validation cells (colour casts, JPEG, mild blur, exposure) still pass:
those are the variations a working device must tolerate (``converter.cell_build``).

- ``OodCheck``, per cell, on the cell model's 64-wide embedding before its softmax. A cell
  beyond it is shown as not recognised and left out of the field call.
- ``AppearanceCheck``, per field, on what the cells look like (``edge.analysis.appearance``:
  size, stain colour and strength, texture, whether the dark parts are the stained ones).
  The embedding keeps little that does not help tell the classes apart, so a cell with its
  lightness inside out lands among the training cells there; its numbers do not. A stain,
  objective or camera changes every cell of a field together, so the field's median cell
  distance is compared with the limit: steadier than one cell's, which small or
  overlapping cells push far out even on the training site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edge.analysis.appearance import FEATURES, UNMEASURED

#: What a refused field or cell tells the technician.
OUT_OF_DISTRIBUTION = ("these cells do not look like the slides this model was trained on: check the stain, the "
                       "objective and the camera, and verify the device on your own slides")


@dataclass(frozen=True)
class OodCheck:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D): inverse of the shrunk covariance
    limit: float  # distances above it are out of distribution

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        return _mahalanobis(np.atleast_2d(np.asarray(embeddings, np.float64)) - self.mean, self.precision)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [round(float(v), 6) for v in self.mean],
                "precision": [[round(float(v), 6) for v in row] for row in self.precision],
                "limit": round(float(self.limit), 4)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OodCheck":
        mean, precision = np.asarray(data["mean"], np.float64), np.asarray(data["precision"], np.float64)
        if precision.shape != (len(mean), len(mean)):
            raise ValueError(f"out-of-distribution check: precision {precision.shape} does not match mean {mean.shape}")
        return cls(mean, precision, float(data["limit"]))


def _mahalanobis(d: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


@dataclass(frozen=True)
class AppearanceCheck:
    """The field-level check on the cells' appearance numbers (``FEATURES``, in that order),
    each standardised by the training cells' mean and spread before the distance, so a
    feature in micrometres and one in correlation units weigh alike."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,): the training cells' standard deviation per feature
    precision: np.ndarray  # (F, F): inverse of the shrunk covariance of the standardised features
    limit: float  # a field whose median cell distance is above it is out of distribution

    def distances(self, rows: np.ndarray) -> np.ndarray:
        """Each cell's distance, from its ``(N, F)`` appearance rows."""
        return _mahalanobis((np.atleast_2d(np.asarray(rows, np.float64)) - self.mean) / self.scale, self.precision)

    @staticmethod
    def field_distance(distances: np.ndarray, rows: np.ndarray | None = None) -> float:
        """The median over the field's measured cells: a cell too small to measure has the
        ``UNMEASURED`` row, whose distance is a sentinel, not a look (one such speck in a field
        of two once set a build's limit to 1.2e7, and the check then refused nothing). A field
        with no measured cell at all is ``UNMEASURED`` away: nothing in it looks like a cell."""
        distances = np.asarray(distances, np.float64)
        if rows is not None:
            distances = distances[~(np.atleast_2d(np.asarray(rows)) >= UNMEASURED).any(1)]
        return float(np.median(distances)) if len(distances) else float(UNMEASURED)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "statistic": "median over the field's cells",
                "mean": [round(float(v), 6) for v in self.mean], "scale": [round(float(v), 6) for v in self.scale],
                "precision": [[round(float(v), 6) for v in row] for row in self.precision],
                "limit": round(float(self.limit), 4)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AppearanceCheck":
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"appearance check: features {list(data['features'])} are not the ones this software "
                             f"measures ({list(FEATURES)})")
        mean, scale = np.asarray(data["mean"], np.float64), np.asarray(data["scale"], np.float64)
        precision = np.asarray(data["precision"], np.float64)
        if mean.shape != (len(FEATURES),) or scale.shape != mean.shape or precision.shape != (len(mean), len(mean)):
            raise ValueError(f"appearance check: mean {mean.shape}, scale {scale.shape} and precision "
                             f"{precision.shape} do not fit {len(FEATURES)} features")
        if not np.all(scale > 0):
            raise ValueError("appearance check: every feature's scale must be positive")
        return cls(mean, scale, precision, float(data["limit"]))


def fit_appearance(rows: np.ndarray, shrinkage: float = 0.05) -> AppearanceCheck:
    """Mean, spread and precision of the training cells' appearance rows (N, F); the limit is
    left open (infinite) for the converter to fit on validation. Rows of cells too small to
    measure (``UNMEASURED``) are left out: five such platelets among 25,000 cells once set
    every feature's spread near 10^5, every field's distance near 0 and the limit at 0.03,
    so the check passed a field of inverted lightness."""
    x = np.asarray(rows, np.float64)
    x = x[~(x >= UNMEASURED).any(1)]
    if len(x) < 2:
        raise ValueError("appearance check: fewer than two measurable cells to fit on")
    scale = np.maximum(x.std(0), 1e-6)
    mean, precision = fit((x - x.mean(0)) / scale, shrinkage)
    return AppearanceCheck(x.mean(0), scale, precision, float("inf"))


def fit(embeddings: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of ``embeddings`` (N, D), the covariance shrunk toward its diagonal
    mean so a few hundred cells in 64 dimensions give a stable inverse."""
    x = np.asarray(embeddings, np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    target = np.eye(cov.shape[0]) * np.trace(cov) / cov.shape[0]
    return mean, np.linalg.inv((1 - shrinkage) * cov + shrinkage * target)
