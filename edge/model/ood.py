"""Refusing cells unlike those the model was trained on.

A classifier answers for every input, including a cell from another laboratory's stain,
camera or microscope that it has never seen. The cell model has a 64-wide embedding before
its softmax; the converter fits the mean and the (shrunk) covariance of the training cells'
embeddings, and a cell is out of distribution when its Mahalanobis distance from them is
above a limit. The limit is fitted so that the capture-condition suite's benign
perturbations of validation cells (colour casts, JPEG, mild blur, exposure) still pass:
those are the variations a working device must tolerate (``converter.cell_build``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: What a refused field or cell tells the technician.
OUT_OF_DISTRIBUTION = ("these cells do not look like the slides this model was trained on: check the stain, the "
                       "objective and the camera, and verify the device on your own slides")


@dataclass(frozen=True)
class OodCheck:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D): inverse of the shrunk covariance
    limit: float  # distances above it are out of distribution

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(np.asarray(embeddings, np.float64)) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))

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


def fit(embeddings: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of ``embeddings`` (N, D), the covariance shrunk toward its diagonal
    mean so a few hundred cells in 64 dimensions give a stable inverse."""
    x = np.asarray(embeddings, np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    target = np.eye(cov.shape[0]) * np.trace(cov) / cov.shape[0]
    return mean, np.linalg.inv((1 - shrinkage) * cov + shrinkage * target)
