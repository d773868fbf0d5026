"""`vidtwin play`: play a trained world model, one predicted clip per action, from the first clip of a video.

    vidtwin play logs/digits_world --start data/digit_game/val/00000.mp4 --actions RRUULD --output rollout.mp4
    vidtwin play logs/digits_world --start data/digit_game/val/00000.mp4 --interactive --output session.mp4

The world model is a ``vidtwin train`` run directory (its newest checkpoint, EMA weights when stored),
one of its checkpoints or a saved folder. The FSQ autoencoder is the one the model records
(``--config`` / ``--ckpt`` name another). The first clip of ``--start`` (its first T frames, at the
autoencoder's frame size) is tokenized, then each action letter predicts the next clip; the output
mp4 is the start clip followed by the predicted clips, at the start video's frame rate, written
atomically (``--overwrite`` to replace a file).

The start video is sampled in time as the world model's training clips were, where its run records
them (``encode-dataset --sample-fps`` of its token dataset), and the output is written at that
rate; a video too slow for it is refused, and a line on stderr says which was done
(:func:`vidtwin.generation.player.start_sampling`). ``--sample-fps`` chooses the sampling instead.

``--interactive`` reads keys in the terminal instead of ``--actions``: the arrow keys are U, D, L
and R (when the model knows them), any letter of the model's vocabulary is itself, ``q`` quits; a
key that is none of these is named under the picture. Each new clip's last frame is drawn in the
terminal with half-block characters (two pixels per character, 24-bit colour), and the session's
video is written at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import torch

from ..generation.player import (PlayError, WorldPlayer, check_output, play_actions, probe_start, read_start_clip,
                                 start_sampling, training_rate)
from ..inference.generate import SEED_RANGE  # what torch.Generator.manual_seed takes
from ..inference.outputs import claim_outputs
from .options import add_allow_other_weights, add_device, add_model, add_overwrite

ARROWS = {"A": "U", "B": "D", "C": "R", "D": "L"}  # the final byte of ESC [ A .. ESC [ D
QUIT_KEYS = {"q", "Q", "\x03", "\x04"}  # q, Ctrl-C, Ctrl-D


def add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling, autoencoder and device options that play and demo check-world share."""
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 picks the likeliest codes")
    group.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes only")
    add_model(parser, required=False)  # the FSQ autoencoder; default: the one the world model records
    add_allow_other_weights(parser, encoded="the world model's training tokens")
    add_device(parser)


def check_seed(seed: int, lowest: int = SEED_RANGE[0]) -> None:
    """Refuse a ``--seed`` that the generators would refuse (after the model loaded, in a traceback)."""
    if not lowest <= seed <= SEED_RANGE[1]:
        raise PlayError(f"--seed must be a whole number from {lowest} to {SEED_RANGE[1]} (2**64 - 1), got {seed}")


def check_sampling(args: argparse.Namespace, lowest_seed: int = SEED_RANGE[0]) -> None:
    """The sampling options, before any model loads: a NaN temperature would silently play greedy."""
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise PlayError(f"--temperature must be a finite number >= 0 (0 picks the likeliest codes), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise PlayError(f"--top-k must be >= 1, got {args.top_k}")
    check_seed(args.seed, lowest_seed)


def is_terminal(stream) -> bool:
    """True for an open stream on a terminal; False for a closed, missing (None) or redirected one."""
    try:
        return stream is not None and not stream.closed and stream.isatty()
    except (AttributeError, ValueError, OSError):  # a stand-in object, or a descriptor closed underneath
        return False


def load_player(args: argparse.Namespace) -> WorldPlayer:
    from ..cpu_threads import apply_cpu_thread_policy
    from ..inference.options import resolve_device

    if resolve_device(args.device).type == "cpu":
        apply_cpu_thread_policy()  # logged under --verbose, as every command that runs a model on the CPU
    return WorldPlayer(args.world, args.config, args.ckpt, device=resolve_device(args.device),
                       allow_unsafe_pickle=args.allow_unsafe_pickle, allow_other_weights=args.allow_other_weights,
                       announce=lambda line: print(f"{args.prog}: {line}", file=sys.stderr))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("world", help="the world model: a `vidtwin train` run directory, checkpoint or saved folder")
    parser.add_argument("--start", type=Path, required=True, help="video whose first clip starts the rollout")
    parser.add_argument("--actions", default=None, help="one action letter per predicted clip, e.g. RRUULD")
    parser.add_argument("--interactive", action="store_true", help="read actions from the keyboard (arrow keys; q quits)")
    parser.add_argument("--output", type=Path, required=True, help="the mp4 to write: start clip + predicted clips")
    add_overwrite(parser)
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same rollout (default 0)")
    parser.add_argument("--sample-fps", type=float, default=None, metavar="F",
                        help="keep every round(fps / F)-th frame of --start, as encode-dataset --sample-fps does "
                             "(default: as the world model's training clips were sampled, where its run records it)")
    add_rollout_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.interactive == (args.actions is not None):
        raise PlayError("give either --actions (e.g. --actions RRUULD) or --interactive")
    if args.actions is not None and not args.actions:
        raise PlayError("--actions is empty; give one letter per clip to predict, e.g. RRUULD")
    check_sampling(args)
    if args.sample_fps is not None and not (math.isfinite(args.sample_fps) and args.sample_fps > 0):
        raise PlayError(f"--sample-fps must be a finite number > 0, got {args.sample_fps}")
    if args.interactive and not (is_terminal(sys.stdin) and is_terminal(sys.stdout)):
        raise PlayError("--interactive needs a terminal to read keys from and draw in (stdin and stdout); "
                        "give --actions instead")
    check_output(args.output, args.start, args.overwrite)
    info = probe_start(args.start)
    stride, sampling_line = start_sampling(args.start, info, training_rate(args.world), args.sample_fps)
    claim_outputs(args.claims, [args.output], [args.start], args.overwrite)  # no other run writes it meanwhile
    from ..data.video_io import write_video

    player = load_player(args)
    if args.actions is not None:
        player.world.action_indices(args.actions)  # unknown letters: before any work
    start, fps = read_start_clip(args.start, player.clip_size, stride, info)
    print(sampling_line, file=sys.stderr)
    if args.interactive:
        clips = play_interactive(player, start, args.seed, args.temperature, args.top_k)
    else:
        clips = play_actions(player, start, args.actions, args.seed, args.temperature, args.top_k)
    check_output(args.output, args.start, args.overwrite)  # a file may have appeared meanwhile
    write_video(args.output, torch.cat(clips), fps=fps)
    print(f"wrote {args.output}: the start clip and {len(clips) - 1} predicted clips "
          f"({sum(len(clip) for clip in clips)} frames at {fps:g} fps)")
    return 0


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


def say_below(line: str) -> None:
    """One line under the picture and its caption, replacing the last such line (the cursor stays
    on that line after :func:`show`): the drawing is not scrolled or redrawn."""
    sys.stdout.write("\r\x1b[K" + line)
    sys.stdout.flush()


def key_name(key: str) -> str:
    """A key as the terminal line names it: printable ones quoted, others by their code."""
    if not key:
        return "that key"  # an escape sequence other than the arrows (read_keys gives "")
    return repr(key) if key.isprintable() else f"the key {ord(key):#04x}"


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
                say_below(f"{key_name(key)} is not an action of this world model; keys: {keys}; q quits and saves")
                continue
            clips.append(player.decode(state.step(player.world.action_indices(key)))[0])
            letters += key
            show(clips[-1][-1].numpy(), f"clip {len(clips) - 1}: {letters[-40:]}   ({keys}; q quits and saves)")
    return clips
