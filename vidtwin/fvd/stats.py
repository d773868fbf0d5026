"""Gaussian statistics of feature sets, kept as float64 running sums, and the Fréchet distance.

Features are folded into the count, their sum and the sum of their outer products as they come,
so memory does not grow with the number of clips (a 400x400 float64 matrix per set). The
covariance is the biased one, ``sum_outer / N - mean mean^T``, as in StyleGAN-V and ``cd-fvd``.

Statistics can be saved to a safetensors file with the protocol they were computed under, and
reused (the real set of a benchmark is measured once).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from vidtwin.atomic_io import atomic_path
from vidtwin.hints import Verbatim, command

from .protocol import FVDError

STATS_FORMAT = "vidtwin-fvd-statistics"
STATS_VERSION = "1"
SAVED_BY = command("fvd", "--save-real-stats", Verbatim("FILE"))

# Below this relative spread (see FeatureStats.relative_spread) a set's features are taken as
# constant. Measured here: an untrained I3D (default initialisation) gives 1e-5 on noise, black and
# white clips alike, so its FVD is 0.0000 for any two sets; the trained network's logits vary
# between clips by about their own size (0.1 to 1). 1e-3 sits two orders of magnitude from both.
DEGENERATE_SPREAD = 1e-3


@dataclass
class FeatureStats:
    """Running float64 sums of ``(N, dim)`` features: the count, the sum and the sum of outer products."""

    dim: int
    count: int = 0
    total: np.ndarray = field(default=None)  # (dim,) float64
    total_outer: np.ndarray = field(default=None)  # (dim, dim) float64

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.dim, dtype=np.float64)
        if self.total_outer is None:
            self.total_outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def add(self, features: torch.Tensor | np.ndarray) -> None:
        """Fold in a batch of features ``(n, dim)`` (any float dtype; summed in float64)."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        batch = np.asarray(features, dtype=np.float64)
        if batch.ndim != 2 or batch.shape[1] != self.dim:
            raise ValueError(f"expected features shaped (n, {self.dim}), got {batch.shape}")
        self.count += batch.shape[0]
        self.total += batch.sum(axis=0)
        self.total_outer += batch.T @ batch

    def merge(self, other: FeatureStats) -> None:
        """Add the sums of another set of the same feature dimension."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-d statistics into {self.dim}-d ones")
        self.count += other.count
        self.total += other.total
        self.total_outer += other.total_outer

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(dim,)`` and biased covariance ``(dim, dim)``, float64."""
        if self.count < 1:
            raise ValueError("no features were added")
        mean = self.total / self.count
        cov = self.total_outer / self.count - np.outer(mean, mean)
        return mean, (cov + cov.T) / 2  # exactly symmetric

    def relative_spread(self) -> float:
        """How much the features vary between clips, relative to their size: 0 when all are equal.

        The RMS over dimensions of the features' standard deviation across clips, divided by the
        RMS of the features themselves (so the scale of the logits does not matter); in [0, 1].
        """
        mean, cov = self.mean_cov()
        spread = float(np.sqrt(max(np.trace(cov), 0.0) / self.dim))
        level = float(np.sqrt(mean @ mean / self.dim + spread ** 2))
        return spread / level if level > 0 else 0.0

    # ------------------------------------------------------------------------------------------
    # files

    def save(self, path: str | os.PathLike, protocol: dict) -> None:
        """Write the sums and ``protocol`` (JSON metadata) to a safetensors file, atomically."""
        tensors = {"count": np.array([self.count], dtype=np.int64), "sum": self.total, "sum_outer": self.total_outer}
        metadata = {"format": STATS_FORMAT, "version": STATS_VERSION, "protocol": json.dumps(protocol, sort_keys=True)}
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".safetensors") as temp:
                save_file(tensors, str(temp), metadata=metadata)
        except OSError as error:
            raise FVDError(f"cannot write the statistics {path}: {error.strerror or error}; the file was not written") from None
        except SafetensorError as error:  # safetensors reports its own write errors (a full disk) this way
            reason = str(error).split("I/O error: ")[-1]
            raise FVDError(f"cannot write the statistics {path}: {reason}; the file was not written") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[FeatureStats, dict]:
        """``(stats, protocol)`` from a file written by :meth:`save`; FVDError for anything else."""
        what = f"--real-stats {path}"
        if not os.path.isfile(path):
            raise FVDError(f"{what} does not exist")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="np") as reader:
                metadata = reader.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise FVDError(f"{what} is not a statistics file written by `{SAVED_BY}` ({error})") from None
        if metadata.get("format") != STATS_FORMAT or set(tensors) != {"count", "sum", "sum_outer"}:
            raise FVDError(f"{what} is not a statistics file written by `{SAVED_BY}`")
        if metadata.get("version") != STATS_VERSION:
            raise FVDError(f"{what} has statistics format version {metadata.get('version')}; this version reads {STATS_VERSION}")
        total, total_outer = tensors["sum"], tensors["sum_outer"]
        dim = total.shape[0]
        if total.dtype != np.float64 or total_outer.shape != (dim, dim) or total_outer.dtype != np.float64:
            raise FVDError(f"{what} holds sums of the wrong shape or dtype: {total.shape} {total.dtype}, {total_outer.shape}")
        stats = cls(dim, int(tensors["count"][0]), total.copy(), total_outer.copy())
        return stats, json.loads(metadata.get("protocol", "{}"))


# ----------------------------------------------------------------------------------------------
# the distance


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues count as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b), in float64.

    ``|mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^(1/2))``. The trace term is
    computed as ``tr((S cov_b S)^(1/2))`` with ``S = cov_a^(1/2)``: the same value (the two
    matrices are similar), but ``S cov_b S`` is symmetric PSD, so its eigenvalues are real and
    clipped at 0 where rounding makes them negative. This stays exact for the singular
    covariances of fewer clips than dimensions, where the square root of the non-symmetric product
    (``scipy.linalg.sqrtm``) can return complex values. The result is clipped at 0.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt_product = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    difference = mean_a - mean_b
    distance = difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))


def degenerate_features(stats: FeatureStats, what: str) -> str | None:
    """A warning when the features of ``what`` (a set's name) barely vary between clips, else None."""
    spread = stats.relative_spread()
    if spread >= DEGENERATE_SPREAD:
        return None
    return (f"the I3D features of {what} barely vary between clips (relative spread {spread:.1e}, below "
            f"{DEGENERATE_SPREAD:g}): the FVD measures nothing; the weights may be untrained or damaged, "
            "or every clip of the set is the same")


def fvd_of(real: FeatureStats, fake: FeatureStats) -> float:
    """The Fréchet distance between the Gaussians fitted to two sets' features."""
    return frechet_distance(*real.mean_cov(), *fake.mean_cov())
