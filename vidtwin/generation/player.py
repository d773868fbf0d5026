"""Playing a trained world model: :class:`WorldPlayer` holds the world model and the FSQ
autoencoder of its tokens, so that clips of frames go in and clips of frames come out
(``vidtwin play``, :mod:`vidtwin.cli.play`).

The world model is a ``vidtwin train`` run directory (its newest checkpoint, EMA weights when
stored), one of its checkpoints or a saved folder (:func:`~vidtwin.generation.save_world_model`).
The FSQ autoencoder is the one the model records, unless a config and checkpoint name another.
:func:`read_start_clip` reads the first clip of a video (its first T frames, at the autoencoder's
frame size); :func:`play_actions` predicts one clip per action letter after it.

The start video is sampled in time as the world model's training clips were (:func:`start_sampling`):
a world model learns how far things move in one clip, so a 30 fps start clip for a model trained
on 8 fps clips would show it a quarter of the motion it knows. Where the training run records its
token dataset, that dataset's manifest gives the rate (``encode-dataset --sample-fps``, and the
clips' own rate in its index), and the start video keeps every ``round(fps / sample_fps)``-th
frame, as ``encode-dataset`` samples; a video too slow to give that rate is refused.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..pretrained import decoding_autoencoder
from .world import WorldModel


def print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PlayError(ValueError, UserError):
    """A start video, an action string or an option that the world model cannot play."""


class WorldPlayer:
    """A world model with the FSQ autoencoder of its tokens: clips of frames in, clips of frames out.

    Frames are uint8 ``(B, T, H, W, 3)`` RGB; tokens as :mod:`vidtwin.generation.world` lays them out.
    """

    def __init__(self, reference, config=None, ckpt: Optional[str] = None, device="cpu",
                 allow_unsafe_pickle: bool = False, allow_other_weights: bool = False,
                 announce: Optional[Callable[[str], None]] = print_to_stderr):
        """reference: the world model (see the module docstring). config, ckpt: the autoencoder
        (``config`` a YAML path or a list merged in order, as :func:`vidtwin.load_model` takes it);
        both None: the one the world model records (:func:`vidtwin.pretrained.decoding_autoencoder`).
        Its weights must be the ones that encoded the world model's training data, unless
        ``allow_other_weights``. announce: told, in one line, which autoencoder was loaded with
        which weights (default: stderr; None: silent)."""
        from ..checkpoint import load_model  # transformers and timm load with the autoencoder, not on import
        from ..latents.latent_file import weights_fingerprint

        self.device = torch.device(device)
        self.world = WorldModel.from_pretrained(reference, device=self.device)
        choice = decoding_autoencoder(self.world, config, ckpt, what="world model")
        ckpt = choice.ckpt
        self.autoencoder = load_model(choice.config, ckpt, device=self.device, allow_unsafe_pickle=allow_unsafe_pickle)
        if self.autoencoder.config.regularizer != "fsq":
            raise PlayError(f"the autoencoder {ckpt} has Gaussian (kl) latents, which have no tokens; the world model "
                            "plays on the tokens of the FSQ autoencoder it was trained with")
        shapes = {name: list(shape) for name, shape in self.autoencoder.config.token_shapes().items()}
        if shapes != self.world.config.token_shapes:
            raise PlayError(f"the autoencoder {ckpt} makes tokens of shapes {shapes}, but the world model was trained "
                            f"on {self.world.config.token_shapes}; give the --config/--ckpt it was trained with")
        found = weights_fingerprint(self.autoencoder)
        choice.check_weights(found, allow_other_weights)
        if announce is not None:
            announce(choice.describe(found))

    @property
    def clip_size(self):
        """(T, H, W) of one clip."""
        return tuple(self.autoencoder.input_size)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """uint8 ``(B, T, H, W, 3)`` -> tokens ``{"structure": (B, Q, h_S, w_S), ...}``."""
        video = frames.to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W) in [-1, 1]
        tokens = self.autoencoder.tokenize(video)
        return {name: getattr(tokens, name) for name in ("structure", "dynamics_x", "dynamics_y")}

    @torch.no_grad()
    def decode(self, tokens: Dict[str, torch.Tensor]) -> torch.Tensor:
        """tokens of B clips -> uint8 ``(B, T, H, W, 3)``."""
        from ..models import VidTwinTokens

        video = self.autoencoder.decode(self.autoencoder.detokenize(VidTwinTokens(**tokens)))  # (B, 3, T, H, W)
        scaled = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return scaled.permute(0, 2, 3, 4, 1).cpu()  # (B, T, H, W, 3)


# A start clip whose rate, after sampling, is further than this factor from the training clips'
# rate is refused: its motion per clip would be one the model never saw.
RATE_TOLERANCE = 1.5


@dataclass(frozen=True)
class TrainingRate:
    """The frame rate of the clips a world model was trained on, as its training run records it."""

    sample_fps: Optional[float]  # encode-dataset --sample-fps of its token dataset; None: the videos' own rate
    clip_fps: float  # the training clips' rate (the median of the dataset index's fps column)
    where: str  # the token dataset that records it, for messages


def _float_or_none(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def training_rate(reference, working_dir: Optional[str] = None) -> Optional[TrainingRate]:
    """The rate of the world model's training clips: from the token dataset that the ``vidtwin
    train`` run of ``reference`` (the run folder or one of its checkpoints) names in its
    ``config.yaml``. A relative dataset path is looked for in ``working_dir`` (where training
    ran, when recorded), then in the run folder and the folders above it. None when nothing
    records it: a saved folder, a Hub model, a run whose dataset is gone or unreadable."""
    from ..latents.shards import LatentDatasetError, read_index, read_manifest
    from ..pretrained import is_run_directory, read_run_config, run_directory_of
    from ..state_dict_io import CheckpointError

    path = Path(str(reference))
    run = path if is_run_directory(path) else run_directory_of(path) if path.is_file() else None
    if run is None or not (run / "config.yaml").is_file():
        return None
    try:
        config = read_run_config(run)
    except CheckpointError:
        return None
    model_params = ((config.get("model") or {}).get("params") or {})
    root = model_params.get("dataset") or (((config.get("data") or {}).get("params") or {}).get("root"))
    if not root:
        return None
    candidates = [Path(str(root))] if Path(str(root)).is_absolute() else [
        folder / str(root) for folder in ([Path(working_dir)] if working_dir else []) + [run.absolute(), *run.absolute().parents]]
    dataset = next((folder for folder in candidates if (folder / "manifest.json").is_file()), None)
    if dataset is None:
        return None
    try:
        manifest = read_manifest(dataset) or {}
        sampling = (manifest.get("identity") or {}).get("sampling") or {}
        sample_fps = _float_or_none(sampling.get("sample_fps"))
        rates = [rate for rate in (_float_or_none(value) for value in read_index(dataset).columns["fps"].tolist()) if rate]
    except (LatentDatasetError, OSError, KeyError, AttributeError, ValueError):
        return None
    clip_fps = statistics.median(rates) if rates else sample_fps
    if clip_fps is None:
        return None
    return TrainingRate(sample_fps, clip_fps, f"the token dataset {dataset}")


def probe_start(path: Path):
    """The :func:`~vidtwin.data.video_io.probe_video` of ``--start``, refused in one line when it is
    missing or not a video (before any model loads)."""
    from ..data.video_io import VideoReadError, probe_video

    if not Path(path).is_file():
        raise PlayError(f"--start {path} does not exist; give a video file")
    try:
        info = probe_video(path)
    except VideoReadError as error:
        raise PlayError(f"--start {path} cannot be read: {error}") from None
    if not (math.isfinite(info.fps) and info.fps > 0):
        raise PlayError(f"--start {path} records no usable frame rate ({info.fps}); give another video")
    return info


def _every(stride: int) -> str:
    return "every frame" if stride == 1 else "every 2nd frame" if stride == 2 else (
        "every 3rd frame" if stride == 3 else f"every {stride}th frame")


def start_sampling(path: Path, info, rate: Optional[TrainingRate], sample_fps: Optional[float] = None) -> Tuple[int, str]:
    """``(frame step, line)``: how the start video is sampled in time, and a line saying so.

    ``sample_fps`` (``play --sample-fps``) samples as ``encode-dataset --sample-fps`` does; else the
    training clips' recorded rate (``rate``) is met the same way, and a video that cannot meet it
    within :data:`RATE_TOLERANCE` is refused; with neither, the video is played at its own rate."""
    from ..data.video_io import sampling_stride

    if sample_fps is not None:
        stride = sampling_stride(info.fps, sample_fps)
        trained = f"; the world model was trained on clips of {rate.clip_fps:g} fps" if rate is not None else ""
        return stride, (f"--start {path}: {_every(stride)} of its {info.fps:g} fps ({info.fps / stride:g} fps), as "
                        f"--sample-fps {sample_fps:g} asks{trained}")
    if rate is None:
        return 1, (f"--start {path}: played at its own {info.fps:g} fps; the world model records no frame rate of its "
                   "training clips (give --sample-fps to resample it as they were)")
    stride = sampling_stride(info.fps, rate.sample_fps if rate.sample_fps is not None else rate.clip_fps)
    fps = info.fps / stride
    if not rate.clip_fps / RATE_TOLERANCE <= fps <= rate.clip_fps * RATE_TOLERANCE:
        raise PlayError(f"--start {path} is {info.fps:g} fps, and the world model was trained on clips of "
                        f"{rate.clip_fps:g} fps ({rate.where}); give a video of at least {rate.clip_fps:g} fps, "
                        "or --sample-fps to play it anyway")
    sampled = (f"encode-dataset --sample-fps {rate.sample_fps:g}" if rate.sample_fps is not None
               else "at the videos' own rate")
    if stride == 1:
        return 1, (f"--start {path}: played at its own {info.fps:g} fps, near the {rate.clip_fps:g} fps of the world "
                   f"model's training clips ({rate.where})")
    return stride, (f"--start {path}: resampled from {info.fps:g} to {fps:g} fps ({_every(stride)}), as the world "
                    f"model's training clips were ({sampled}, recorded in {rate.where})")


def read_start_clip(path: Path, clip_size, stride: int = 1, info=None) -> tuple:
    """The first clip of a video, every ``stride``-th frame: (uint8 ``(T, H, W, 3)``, its fps); a
    video that is shorter than a clip or of another frame size is a user error."""
    from ..data.video_io import read_frames

    frames_per_clip, height, width = clip_size
    info = probe_start(path) if info is None else info
    indices = list(range(0, info.num_frames, stride))[:frames_per_clip]
    if len(indices) < frames_per_clip:
        taken = "" if stride == 1 else f" ({len(indices)} at {_every(stride)})"
        raise PlayError(f"--start {path} has {info.num_frames} frames{taken}, fewer than one clip of {frames_per_clip}; "
                        "give a longer video")
    if (info.height, info.width) != (height, width):
        raise PlayError(f"--start {path} is {info.width}x{info.height}, but the autoencoder's clips are "
                        f"{width}x{height}; resize the video first")
    return read_frames(path, indices), info.fps / stride


def check_output(output: Path, start: Path, overwrite: bool) -> None:
    """Refuse an output that is not an .mp4 file name, is the start video, or exists without ``overwrite``."""
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise PlayError(f"--output {output} must end in .mp4")
    if output.exists() and output.resolve() == Path(start).resolve():
        raise PlayError(f"--output {output} is the start video; choose another file")
    if output.is_dir():
        raise PlayError(f"--output {output} is a folder; give an .mp4 file")
    if output.exists() and not overwrite:
        raise PlayError(f"--output {output} exists; pass --overwrite to replace it, or choose another file")


def play_actions(player: WorldPlayer, start: torch.Tensor, letters: str, seed: int = 0, temperature: float = 1.0,
                 top_k: Optional[int] = None, progress: bool = True) -> List[torch.Tensor]:
    """The start clip and one predicted clip per action letter, each uint8 ``(T, H, W, 3)``; the
    same seed gives the same clips. Sampling: ``temperature`` 0 picks the likeliest codes, ``top_k``
    samples among the k likeliest only."""
    actions = player.world.action_indices(letters)
    state = player.world.start(player.encode(start[None]), seed=seed, temperature=temperature, top_k=top_k)
    clips = [start]
    for action in tqdm(actions, desc="rollout", unit="clip", disable=not progress):
        clips.append(player.decode(state.step([action]))[0])
    return clips


__all__ = ["PlayError", "TrainingRate", "WorldPlayer", "check_output", "play_actions", "probe_start", "read_start_clip",
           "start_sampling", "training_rate"]
