"""Playing a trained world model: :class:`WorldPlayer` holds the world model and the FSQ
autoencoder of its tokens, so that clips of frames go in and clips of frames come out
(``vidtwin play``, :mod:`vidtwin.cli.play`).

The world model is a ``vidtwin train`` run directory (its newest checkpoint, EMA weights when
stored), one of its checkpoints or a saved folder (:func:`~vidtwin.generation.save_world_model`).
The FSQ autoencoder is the one the model records, unless a config and checkpoint name another.
:func:`read_start_clip` reads the first clip of a video (its first T frames, at the autoencoder's
frame size); :func:`play_actions` predicts one clip per action letter after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..pretrained import decoding_autoencoder
from .world import WorldModel


class PlayError(ValueError, UserError):
    """A start video, an action string or an option that the world model cannot play."""


class WorldPlayer:
    """A world model with the FSQ autoencoder of its tokens: clips of frames in, clips of frames out.

    Frames are uint8 ``(B, T, H, W, 3)`` RGB; tokens as :mod:`vidtwin.generation.world` lays them out.
    """

    def __init__(self, reference, config=None, ckpt: Optional[str] = None, device="cpu",
                 allow_unsafe_pickle: bool = False):
        """reference: the world model (see the module docstring). config, ckpt: the autoencoder
        (``config`` a YAML path or a list merged in order, as :func:`vidtwin.load_model` takes it);
        both None: the one the world model records."""
        from ..checkpoint import load_model  # transformers and timm load with the autoencoder, not on import

        self.device = torch.device(device)
        self.world = WorldModel.from_pretrained(reference, device=self.device)
        config, ckpt = decoding_autoencoder(self.world, config, ckpt, what="world model")
        self.autoencoder = load_model(config, ckpt, device=self.device, allow_unsafe_pickle=allow_unsafe_pickle)
        if self.autoencoder.config.regularizer != "fsq":
            raise PlayError(f"the autoencoder {ckpt} has Gaussian (kl) latents, which have no tokens; the world model "
                            "plays on the tokens of the FSQ autoencoder it was trained with")
        shapes = {name: list(shape) for name, shape in self.autoencoder.config.token_shapes().items()}
        if shapes != self.world.config.token_shapes:
            raise PlayError(f"the autoencoder {ckpt} makes tokens of shapes {shapes}, but the world model was trained "
                            f"on {self.world.config.token_shapes}; give the --config/--ckpt it was trained with")

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


def read_start_clip(path: Path, clip_size) -> tuple:
    """The first clip of a video: (uint8 ``(T, H, W, 3)``, fps); a video that is shorter than a clip
    or of another frame size is a user error."""
    from ..data.video_io import probe_video, read_frames

    frames_per_clip, height, width = clip_size
    if not Path(path).is_file():
        raise PlayError(f"--start {path} does not exist; give a video file")
    info = probe_video(path)
    if info.num_frames < frames_per_clip:
        raise PlayError(f"--start {path} has {info.num_frames} frames, fewer than one clip of {frames_per_clip}; "
                        "give a longer video")
    if (info.height, info.width) != (height, width):
        raise PlayError(f"--start {path} is {info.width}x{info.height}, but the autoencoder's clips are "
                        f"{width}x{height}; resize the video first")
    return read_frames(path, list(range(frames_per_clip))), info.fps


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


__all__ = ["PlayError", "WorldPlayer", "check_output", "play_actions", "read_start_clip"]
