"""`vidtwin convert`: turn a checkpoint into a save_pretrained folder (`config.json` + `model.safetensors`).

The folder loads with ``VidTwin.from_pretrained(OUT)``, ``load_model(None, OUT)`` or ``--ckpt OUT``.
Training-only tensors (``loss.*``) and the official tensors that are never used are left out.

    vidtwin convert --config vidtwin --ckpt vidtwin_structure_7_7_8_dynamics_7_8.ckpt --output vidtwin-published
    vidtwin convert --config vidtwin --ckpt hf://microsoft/vidtwin --output vidtwin-published
    vidtwin convert --config logs/run/config.yaml --ckpt logs/run/checkpoints/last.ckpt --output finetuned
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from safetensors import SafetensorError

from ..checkpoint import load_model
from ..errors import UserError
from ..hub import CONFIG_FILE, WEIGHTS_FILE

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, nargs="+",
                        help="model config YAML(s) or presets (this project's or the official format), merged in order")
    parser.add_argument("--ckpt", required=True,
                        help="official .ckpt, a `vidtwin train` checkpoint, .safetensors, or hf://owner/name")
    parser.add_argument("--output", required=True, type=Path, help="directory to write")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights even if the checkpoint stores EMA weights")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help="allow full unpickling (only for files you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already saved in --output")


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"output {args.output} exists and is not a directory")
    saved = [args.output / name for name in (WEIGHTS_FILE, CONFIG_FILE) if (args.output / name).exists()]
    if saved and not args.overwrite:
        raise UserError(f"{args.output} already holds a saved model ({saved[0].name}); pass --overwrite to replace it")
    model = load_model(args.config, args.ckpt, ema=False if args.no_ema else None,
                       allow_unsafe_pickle=args.allow_unsafe_pickle)
    try:
        model.save_pretrained(args.output)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        raise UserError(f"cannot write {args.output}: {error}") from None
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({count:,} parameters)")
    return 0
