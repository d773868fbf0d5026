"""`vidtwin latent-stats`: per-channel mean and std of a latent dataset, for diffusion models.

Writes the mean and std of every channel of structure, dynamics_x and dynamics_y, and of each
channel of the packed latent that ``AutoencoderVidTwin`` gives diffusers (docs/diffusers.md),
computed in float64 in one streaming pass (:mod:`vidtwin.latents.stats`).

    vidtwin latent-stats latents/ --output stats.json
    vidtwin train --base generator/tiny_digits ...   # model.params.normalization: stats.json reads it
    vidtwin convert --ckpt model/ --output model-diffusers --format diffusers --latent-stats stats.json

Exit status: 0 on success; 2 with one ``vidtwin latent-stats: error: ...`` line when the dataset
cannot be read or the output exists without ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="a latent dataset folder (`vidtwin encode-dataset --output`)")
    parser.add_argument("--output", "-o", required=True, help="the JSON file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--batch-size", type=int, default=256, metavar="CLIPS", help="clips read per batch (default 256)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading shards (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..inference.options import InferenceError
    from ..inference.outputs import InputFiles, claim_file_outputs, write_text_output
    from ..latents import LatentDataset
    from ..latents.stats import compute_latent_statistics, statistics_to_json

    if args.batch_size < 1 or args.num_workers < 0:
        raise InferenceError(f"--batch-size must be >= 1 and --num-workers >= 0, got {args.batch_size} and {args.num_workers}")
    output = Path(args.output)
    claim_file_outputs(args.claims, [output], InputFiles().add_folder(args.dataset), args.overwrite)
    dataset = LatentDataset(args.dataset)
    if dataset.codebook is not None:
        print(f"{args.dataset} holds FSQ tokens: the statistics are of their codes")
    stats = compute_latent_statistics(dataset, args.batch_size, args.num_workers, progress=args.progress)
    write_text_output(output, statistics_to_json(stats), "latent statistics")
    packed = stats["packed"]
    print(f"wrote {output}: {stats['clips']} clips; packed channels mean "
          f"{' '.join(f'{v:+.3g}' for v in packed['mean'])}, std {' '.join(f'{v:.3g}' for v in packed['std'])}")
    return 0
