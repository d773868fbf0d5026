"""Play a trained world model: roll out one clip per action from the first clip of a video.

    python -m scripts.play logs/digits_world --start data/digit_game/val/00000.mp4 --actions RRUULD --output rollout.mp4
    python -m scripts.play logs/digits_world --start data/digit_game/val/00000.mp4 --interactive --output session.mp4

The world model is a ``train.py`` run directory (its newest checkpoint, EMA weights when stored),
one of its checkpoints or a saved folder (``vidtwin.generation.save_world_model``). The FSQ
autoencoder is the one the model records (``--config`` / ``--ckpt`` name another). The first clip
of ``--start`` (its first T frames, at the autoencoder's frame size) is tokenized, then each action
letter predicts the next clip; the output mp4 is the start clip followed by the predicted clips,
at the start video's frame rate, written atomically (``--overwrite`` to replace a file).

``--interactive`` reads keys in the terminal instead of ``--actions``: the arrow keys are U, D, L
and R (when the model knows them), any letter of the model's vocabulary is itself, ``q`` quits.
Each new clip's last frame is drawn in the terminal with half-block characters (two pixels per
character, 24-bit colour), and the session's video is written at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.errors import UserError

PROG = "play.py"
ARROWS = {"A": "U", "B": "D", "C": "R", "D": "L"}  # the final byte of ESC [ A .. ESC [ D
QUIT_KEYS = {"q", "Q", "\x03", "\x04"}  # q, Ctrl-C, Ctrl-D

logger = logging.getLogger(__name__)


class PlayError(ValueError, UserError):
    """A start video, an action string or an option that the world model cannot play."""


# ---------------------------------------------------------------------------- the models
class WorldPlayer:
    """A world model with the FSQ autoencoder of its tokens: clips of frames in, clips of frames out.

    Frames are uint8 ``(B, T, H, W, 3)`` RGB; tokens as :mod:`vidtwin.generation.world` lays them out.
    """

    def __init__(self, reference, config: Optional[str] = None, ckpt: Optional[str] = None, device="cpu"):
        from vidtwin.checkpoint import load_model
        from vidtwin.generation import load_world_model
        from vidtwin.inference.generate import resolve_autoencoder

        self.device = torch.device(device)
        self.world = load_world_model(reference, device=self.device)
        config, ckpt = resolve_autoencoder(self.world, config, ckpt, what="world model")
        self.autoencoder = load_model(config, ckpt, device=self.device)
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
        from vidtwin.models import VidTwinTokens

        video = self.autoencoder.decode(self.autoencoder.detokenize(VidTwinTokens(**tokens)))  # (B, 3, T, H, W)
        scaled = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return scaled.permute(0, 2, 3, 4, 1).cpu()  # (B, T, H, W, 3)


def read_start_clip(path: Path, clip_size) -> tuple:
    """The first clip of a video: (uint8 ``(T, H, W, 3)``, fps); a video that is shorter than a clip
    or of another frame size is a user error."""
    from vidtwin.data.video_io import probe_video, read_frames

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
    if output.suffix.lower() != ".mp4":
        raise PlayError(f"--output {output} must end in .mp4")
    if output.exists() and output.resolve() == Path(start).resolve():
        raise PlayError(f"--output {output} is the start video; choose another file")
    if output.is_dir():
        raise PlayError(f"--output {output} is a folder; give an .mp4 file")
    if output.exists() and not overwrite:
        raise PlayError(f"--output {output} exists; pass --overwrite to replace it, or choose another file")


# ---------------------------------------------------------------------------- the terminal
def half_block_image(frame: np.ndarray) -> str:
    """uint8 ``(H, W, 3)`` -> text of H/2 lines: each character shows two pixels (upper half block,
    foreground the top pixel, background the bottom one), in 24-bit ANSI colour."""
    if frame.shape[0] % 2:
        frame = np.concatenate([frame, np.zeros_like(frame[:1])])  # (H + 1, W, 3): an even number of rows
    lines = []
    for top, bottom in zip(frame[0::2], frame[1::2]):
        cells = [f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m\u2580" for t, b in zip(top, bottom)]
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def read_keys(stream) -> Iterator[str]:
    """Keys from a terminal in raw mode: arrows as ``U D L R`` (via :data:`ARROWS`), other characters as typed."""
    while True:
        key = stream.read(1)
        if not key:
            return
        if key == "\x1b":
            if stream.read(1) == "[":
                yield ARROWS.get(stream.read(1), "")
            continue
        yield key


class RawTerminal:
    """The terminal in raw mode (keys arrive one at a time, unechoed) inside the block; restored after."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        import termios
        import tty

        self.saved = termios.tcgetattr(self.stream.fileno())
        tty.setraw(self.stream.fileno())
        return self

    def __exit__(self, *exc):
        import termios

        termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self.saved)


def show(frame: np.ndarray, caption: str) -> None:
    # Raw mode: lines need an explicit carriage return.
    sys.stdout.write("\x1b[H\x1b[2J" + half_block_image(frame).replace("\n", "\r\n") + "\r\n" + caption + "\r\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- playing
def play_actions(player: WorldPlayer, start: torch.Tensor, letters: str, seed: int, temperature: float,
                 top_k: Optional[int]) -> List[torch.Tensor]:
    """The start clip and one predicted clip per action letter, each uint8 ``(T, H, W, 3)``."""
    actions = player.world.action_indices(letters)
    state = player.world.start(player.encode(start[None]), seed=seed, temperature=temperature, top_k=top_k)
    clips = [start]
    from tqdm import tqdm

    for action in tqdm(actions, desc="rollout", unit="clip"):
        clips.append(player.decode(state.step([action]))[0])
    return clips


def play_interactive(player: WorldPlayer, start: torch.Tensor, seed: int, temperature: float,
                     top_k: Optional[int]) -> List[torch.Tensor]:
    """Clips played from the keyboard until ``q``; see the module docstring."""
    known = player.world.config.actions
    state = player.world.start(player.encode(start[None]), seed=seed, temperature=temperature, top_k=top_k)
    clips, letters = [start], ""
    keys = "/".join(known) + (" or the arrow keys" if set("UDLR") <= set(known) else "")
    with RawTerminal(sys.stdin):
        show(start[-1].numpy(), f"start clip. Actions: {keys}; q quits and saves.")
        for key in read_keys(sys.stdin):
            if key in QUIT_KEYS:
                break
            if key not in known:
                continue
            clips.append(player.decode(state.step(player.world.action_indices(key)))[0])
            letters += key
            show(clips[-1][-1].numpy(), f"clip {len(clips) - 1}: {letters[-40:]}   ({keys}; q quits and saves)")
    return clips


def add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling, autoencoder and device options that play and check_world share."""
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 picks the likeliest codes")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes only")
    parser.add_argument("--config", default=None, help="autoencoder config (default: the one the world model records)")
    parser.add_argument("--ckpt", default=None, help="autoencoder checkpoint (default: the one the world model records)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", help="the world model: a train.py run directory, checkpoint or saved folder")
    parser.add_argument("--start", type=Path, required=True, help="video whose first clip starts the rollout")
    parser.add_argument("--actions", default=None, help="one action letter per predicted clip, e.g. RRUULD")
    parser.add_argument("--interactive", action="store_true", help="read actions from the keyboard (arrow keys; q quits)")
    parser.add_argument("--output", type=Path, required=True, help="the mp4 to write: start clip + predicted clips")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same rollout (default 0)")
    add_rollout_arguments(parser)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.interactive == (args.actions is not None):
        raise PlayError("give either --actions (e.g. --actions RRUULD) or --interactive")
    if args.actions is not None and not args.actions:
        raise PlayError("--actions is empty; give one letter per clip to predict, e.g. RRUULD")
    if args.temperature < 0 or (args.top_k is not None and args.top_k < 1):
        raise PlayError(f"--temperature must be >= 0 and --top-k >= 1, got {args.temperature} and {args.top_k}")
    if args.interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise PlayError("--interactive needs a terminal; give --actions instead")
    check_output(args.output, args.start, args.overwrite)
    from vidtwin.data.video_io import write_video
    from vidtwin.inference.options import resolve_device

    player = WorldPlayer(args.world, args.config, args.ckpt, device=resolve_device(args.device))
    if args.actions is not None:
        player.world.action_indices(args.actions)  # unknown letters: before any work
    start, fps = read_start_clip(args.start, player.clip_size)
    if args.interactive:
        clips = play_interactive(player, start, args.seed, args.temperature, args.top_k)
    else:
        clips = play_actions(player, start, args.actions, args.seed, args.temperature, args.top_k)
    check_output(args.output, args.start, args.overwrite)  # a file may have appeared meanwhile
    write_video(args.output, torch.cat(clips), fps=fps)
    print(f"wrote {args.output}: the start clip and {len(clips) - 1} predicted clips "
          f"({sum(len(clip) for clip in clips)} frames at {fps:g} fps)")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
