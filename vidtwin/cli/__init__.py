"""The ``vidtwin`` command: every user tool of the package as one subcommand.

    vidtwin train --base tiny
    vidtwin reconstruct --config vidtwin --ckpt hf://microsoft/vidtwin --input clip.mp4 --output out/
    vidtwin demo digits data/moving_digits
    vidtwin <command> --help

Each subcommand is a module of this package with the same shape::

    def add_arguments(parser: argparse.ArgumentParser) -> None   # its options
    def run(args: argparse.Namespace) -> int                     # its work; returns the exit code
    failure_types() -> tuple[type, ...]                          # optional: errors that end the work
                                                                 # with exit 1 (see convention.run_main)

Shared option groups (model reference, video, runtime) are declared once, in :mod:`.options`.
The table below names each command's module and its one-line summary, so that ``vidtwin --help``
imports no command and no torch. Only the chosen command's module is imported, and only after the
CPU thread policy has set how OpenMP threads wait (:func:`vidtwin.cpu_threads.prepare_cpu_threads`):
OpenMP reads that setting once, when torch loads it.

Nothing outside this package imports it: the library raises :class:`vidtwin.errors.UserError`
subclasses, and this layer turns them into one-line messages (:mod:`.convention`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from contextlib import ExitStack
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..cpu_threads import load_sample_note, prepare_cpu_threads
from ..hints import PROGRAM
from .convention import add_debug_flag, run_main

# name -> (module under vidtwin.cli, summary), or name -> (group table, summary) for a group of commands.
Command = Tuple[Union[str, Dict[str, Tuple[str, str]]], str]
DEMO_COMMANDS: Dict[str, Tuple[str, str]] = {
    "digits": ("demo_digits", "make the Moving Digits data (clips, labels, game videos with actions)"),
    "check-generation": ("demo_check_generation", "score generated Moving Digits samples: digit, direction, decoupling"),
    "check-world": ("demo_check_world", "score a Moving Digits world model's rollouts step by step"),
    "world-loss": ("demo_world_loss", "a world model's masked-token loss on held-out and training windows"),
    "check-split": ("demo_check_split", "score what each latent holds on two-speed Moving Digits: digit, drift, shake"),
}
COMMANDS: Dict[str, Command] = {
    "train": ("train", "train or fine-tune a model from YAML configs (autoencoder, generator, world model)"),
    "reconstruct": ("reconstruct", "encode and decode videos; writes mp4s"),
    "encode": ("encode", "write the latents of videos to .safetensors files"),
    "decode": ("decode", "rebuild a video from a latent file"),
    "cross": ("cross", "structure of one video with the dynamics of another"),
    "decoupling": ("decoupling", "measure what the structure and dynamics latents hold: single-latent decodes, bands, order"),
    "evaluate": ("evaluate", "PSNR / SSIM / LPIPS (and rFVD) of reconstructions"),
    "fvd": ("fvd", "Frechet Video Distance between two sets of videos, with its protocol"),
    "encode-dataset": ("encode_dataset", "encode a folder or CSV of videos into a sharded latent dataset"),
    "latent-stats": ("latent_stats", "per-channel mean and std of a latent dataset, for diffusion models"),
    "generate": ("generate", "sample videos from a trained latent generator"),
    "play": ("play", "play a trained world model: one clip per action"),
    "convert": ("convert", "convert a checkpoint into a save_pretrained or diffusers folder"),
    "make-meta": ("make_meta", "write the CSV meta file of a folder of videos"),
    "compression-report": ("compression_report", "latent shapes, compression and tokens of a config"),
    "demo": (DEMO_COMMANDS, "the Moving Digits demos: data and checkers"),
}
HELP_FLAGS = ("-h", "--help")
DESCRIPTION = "VidTwin: a video autoencoder with decoupled structure and dynamics latents, its generator and world model."
EPILOG = """examples:
  vidtwin train --base tiny                      # the CPU quick start on built-in clips
  vidtwin reconstruct --config vidtwin --ckpt hf://microsoft/vidtwin --input clip.mp4 --output out/
  vidtwin COMMAND --help                         # a command's options"""


def _chosen(argv: Sequence[str], table: Dict[str, Command]) -> Optional[str]:
    """The command named by the first word of ``argv`` that is not an option, if it is one."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in table else None


def _command_parser(parent: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    return parent.add_parser(name, help=summary, description=summary,
                             formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``vidtwin``, with the arguments of the command that ``argv`` names (and only
    that one: every other command is listed by its summary without importing its module)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv, COMMANDS)
    for name, (target, summary) in COMMANDS.items():
        command = _command_parser(commands, name, summary)
        if name != chosen:
            continue
        if isinstance(target, dict):  # a group: its own subcommands, chosen by the next word
            group = command.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
            rest = list(argv)[list(argv).index(name) + 1:]
            sub_chosen = _chosen(rest, target)
            for sub_name, (module_name, sub_summary) in target.items():
                sub = _command_parser(group, sub_name, sub_summary)
                if sub_name == sub_chosen:
                    _attach(sub, module_name, f"{PROGRAM} {name} {sub_name}")
        else:
            _attach(command, target, f"{PROGRAM} {name}")
    return parser


def _attach(parser: argparse.ArgumentParser, module_name: str, prog: str) -> None:
    module = importlib.import_module(f"{__name__}.{module_name}")
    parser.prog = prog
    if module.__doc__:
        parser.description = module.__doc__
    add_debug_flag(parser, in_subcommand=True)
    module.add_arguments(parser)
    parser.set_defaults(module=module, prog=prog)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``vidtwin ARGV`` and return its exit code (0 done, 1 the work failed, 2 a user error,
    130 interrupted, 128 + N stopped by signal N); see :mod:`vidtwin.cli.convention`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(flag in argv for flag in HELP_FLAGS):  # a request for help runs nothing: skip the load sample
        prepare_cpu_threads()
    args = build_parser(argv).parse_args(argv)
    if args.verbose or args.debug:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    note = load_sample_note()  # why the load sample fell back, if it did: logged now that logging is set up
    if note:
        logging.getLogger(__name__).info(note)
    module = args.module
    failure_types = module.failure_types() if hasattr(module, "failure_types") else ()

    def run() -> int:
        with ExitStack() as claims:  # output names held for the whole command (vidtwin.inference.outputs)
            args.claims = claims
            return module.run(args)

    return run_main(args.prog, run, debug=args.debug, failure_types=failure_types)


def train_main(argv: Optional[List[str]] = None) -> int:
    """``vidtwin-train ARGS`` and a clone's ``python train.py ARGS``: the same as ``vidtwin train ARGS``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


__all__ = ["COMMANDS", "DEMO_COMMANDS", "build_parser", "main", "train_main"]
