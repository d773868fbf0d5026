"""Fréchet Video Distance: I3D features, float64 running statistics, the distance, and its protocol.

The command line is ``vidtwin fvd`` (two sets of videos) and ``vidtwin evaluate --fvd``
(reconstructions against their inputs), in ``vidtwin/inference/fvd_*.py``: this package is the
metric itself and knows nothing of the autoencoder or the inference pipeline. docs/inference.md#fvd
defines the number and the protocols. The library parts::

    model, weights = load_i3d(find_weights())              # weights: {"file", "sha256"}
    real, fake = FeatureStats(400), FeatureStats(400)
    real.add(i3d_features(model, real_clips))               # uint8 (B, T, H, W, 3) -> (B, 400)
    fake.add(i3d_features(model, fake_clips))
    value = fvd_of(real, fake)
"""

from vidtwin.fvd.features import FeatureAccumulator, i3d_features, preprocess_for_i3d
from vidtwin.fvd.i3d import InceptionI3d
from vidtwin.fvd.protocol import ClipProtocol, FVDError
from vidtwin.fvd.stats import FeatureStats, frechet_distance, fvd_of
from vidtwin.fvd.weights import WEIGHTS_FILENAME, WEIGHTS_URL, find_weights, load_i3d

__all__ = [
    "InceptionI3d", "preprocess_for_i3d", "i3d_features", "FeatureAccumulator",
    "FeatureStats", "frechet_distance", "fvd_of", "ClipProtocol", "FVDError",
    "WEIGHTS_FILENAME", "WEIGHTS_URL", "find_weights", "load_i3d",
]
