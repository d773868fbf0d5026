"""Convert an official VidTwin Lightning checkpoint into this project's format.

The output directory holds `config.json` and `model.safetensors` and loads with
`VidTwin.from_pretrained(OUT)` or `load_model(None, OUT)`. Training-only tensors (`loss.*`) and the
official tensors that are never used are left out.

    python -m scripts.convert_checkpoint --config configs/vidtwin.yaml \
        --ckpt vidtwin_structure_7_7_8_dynamics_7_8.ckpt --output vidtwin-published
    python -m scripts.convert_checkpoint --config configs/vidtwin.yaml --ckpt hf://microsoft/vidtwin --output vidtwin-published
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from safetensors import SafetensorError

from vidtwin import load_model
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.errors import UserError
from vidtwin.hub import CONFIG_FILE, WEIGHTS_FILE

logger = logging.getLogger("convert_checkpoint")
PROG = "convert_checkpoint.py"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, nargs="+", help="model config YAML(s): this project's or the official format")
    parser.add_argument("--ckpt", required=True, help="official .ckpt, a train.py checkpoint, .safetensors, or hf://owner/name")
    parser.add_argument("--output", required=True, type=Path, help="directory to write")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights even if the checkpoint stores EMA weights")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help="allow full unpickling (only for files you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already saved in --output")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
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
    logger.info("wrote %s (%s parameters)", args.output, f"{count:,}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
