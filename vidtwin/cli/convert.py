"""`vidtwin convert`: turn a checkpoint into a save_pretrained folder, or into a diffusers folder.

``--format vidtwin`` (default) writes ``config.json`` + ``model.safetensors``, which loads with
``VidTwin.from_pretrained(OUT)``, ``load_model(None, OUT)`` or ``--ckpt OUT``. ``--format diffusers``
writes ``config.json`` + ``diffusion_pytorch_model.safetensors``, which loads with
``vidtwin.diffusers.AutoencoderVidTwin.from_pretrained(OUT)`` (docs/diffusers.md); with
``--with-code`` the folder also carries the model code, so that
``diffusers.AutoModel.from_pretrained(OUT, trust_remote_code=True)`` loads it without this package,
and ``--latent-stats`` writes the statistics of ``vidtwin latent-stats`` into its config. A diffusers
folder converts back with ``--ckpt FOLDER --format vidtwin``, losslessly. Training-only tensors
(``loss.*``) and the official tensors that are never used are left out.

    vidtwin convert --config vidtwin --ckpt vidtwin_structure_7_7_8_dynamics_7_8.ckpt --output vidtwin-published
    vidtwin convert --config vidtwin --ckpt hf://microsoft/vidtwin --output vidtwin-published
    vidtwin convert --config logs/run/config.yaml --ckpt logs/run/checkpoints/last.ckpt --output finetuned
    vidtwin convert --ckpt vidtwin-published --output vidtwin-diffusers --format diffusers --latent-stats stats.json --with-code
    vidtwin convert --ckpt vidtwin-diffusers --output vidtwin-again --format vidtwin
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from safetensors import SafetensorError

from ..errors import UserError
from ..hub import CONFIG_FILE, WEIGHTS_FILE, is_hub_reference

logger = logging.getLogger(__name__)

FORMATS = ("vidtwin", "diffusers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", nargs="+", default=None,
                        help="model config YAML(s) or presets (this project's or the official format), merged in "
                             "order; not needed when --ckpt records its config (a save_pretrained, diffusers or run folder)")
    parser.add_argument("--ckpt", required=True,
                        help="official .ckpt, a `vidtwin train` checkpoint or run folder, .safetensors, a save_pretrained "
                             "or diffusers folder, or hf://owner/name")
    parser.add_argument("--output", required=True, type=Path, help="directory to write")
    parser.add_argument("--format", choices=FORMATS, default="vidtwin",
                        help="vidtwin: this package's save_pretrained folder (default); diffusers: AutoencoderVidTwin's")
    parser.add_argument("--latent-stats", default=None, metavar="JSON",
                        help="--format diffusers: write these statistics (`vidtwin latent-stats`) into the config")
    parser.add_argument("--with-code", action="store_true",
                        help="--format diffusers: also write the model code, for diffusers.AutoModel(trust_remote_code=True)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights even if the checkpoint stores EMA weights")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help="allow full unpickling (only for files you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already saved in --output")


def _output_files(args: argparse.Namespace) -> list:
    from ..diffusers.folder import DIFFUSERS_WEIGHTS_FILE

    weights = DIFFUSERS_WEIGHTS_FILE if args.format == "diffusers" else WEIGHTS_FILE
    return [args.output / weights, args.output / CONFIG_FILE]


def _check_arguments(args: argparse.Namespace, from_diffusers: bool) -> None:
    if args.format != "diffusers" and (args.latent_stats or args.with_code):
        raise UserError("--latent-stats and --with-code belong to --format diffusers")
    if from_diffusers and args.config:
        raise UserError(f"{args.ckpt} is a diffusers folder, which records its config: leave out --config")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"output {args.output} exists and is not a directory")
    from ..inference.outputs import InputFiles, check_targets

    inputs = InputFiles([p for p in (args.latent_stats,) if p])
    if not is_hub_reference(str(args.ckpt)) and Path(args.ckpt).exists():
        inputs.add_folder(args.ckpt)
    saved = [path for path in _output_files(args) if path.exists()]
    if saved and not args.overwrite:
        raise UserError(f"{args.output} already holds a saved model ({saved[0].name}); pass --overwrite to replace it")
    check_targets(_output_files(args), inputs, overwrite=True)  # an output may never be an input


def _load(args: argparse.Namespace, from_diffusers: bool):
    """(VidTwin, diffusers settings carried over from a diffusers input)."""
    if from_diffusers:
        from ..diffusers.folder import load_from_diffusers_folder

        model, values = load_from_diffusers_folder(args.ckpt)
        kept = {name: values.get(name) for name in ("latents_mean", "latents_std", "latent_statistics")}
        return model, {name: value for name, value in kept.items() if value is not None}
    from ..checkpoint import load_model

    return load_model(args.config, args.ckpt, ema=False if args.no_ema else None,
                      allow_unsafe_pickle=args.allow_unsafe_pickle), {}


def run(args: argparse.Namespace) -> int:
    from ..diffusers.folder import is_diffusers_folder, require_diffusers

    from_diffusers = not is_hub_reference(str(args.ckpt)) and is_diffusers_folder(args.ckpt)
    _check_arguments(args, from_diffusers)
    if args.format == "diffusers":
        require_diffusers("--format diffusers")
    stats = None
    if args.latent_stats:
        from ..latents.stats import read_latent_statistics

        stats = read_latent_statistics(args.latent_stats)
    model, settings = _load(args, from_diffusers)
    notes = []
    try:
        if args.format == "diffusers":
            from ..diffusers.folder import statistics_settings, write_diffusers_folder

            if stats is not None:
                from ..latents.latent_file import weights_fingerprint
                from ..latents.stats import check_statistics_fit

                check_statistics_fit(stats, model.config, weights_fingerprint(model), args.latent_stats)
                settings = statistics_settings(stats)
                notes.append(f"latent statistics of {stats['clips']} clips")
            write_diffusers_folder(model, args.output, settings, with_code=args.with_code)
            notes += ["diffusers format"] + (["with its code"] if args.with_code else [])
        else:
            model.save_pretrained(args.output)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        raise UserError(f"cannot write {args.output}: {error}") from None
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({', '.join([f'{count:,} parameters', *notes])})")
    return 0
