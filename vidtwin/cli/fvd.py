"""`vidtwin fvd`: the Frechet Video Distance between two sets of videos, with its protocol.

    vidtwin fvd --real ucf101/ --fake samples/ --output fvd.json --fvd-weights i3d_pretrained_400.pt
"""

from __future__ import annotations

import argparse
import sys

from ..fvd.protocol import CLIP_STARTS
from ..fvd.weights import WEIGHTS_FILENAME
from ..inference.fvd_command import DEFAULT_BATCH_CLIPS, FVDStopped, run_fvd
from .options import add_runtime, inference_options


def weights_help() -> str:
    return f"the I3D weights file ({WEIGHTS_FILENAME}); default: looked up in the torch hub and Hugging Face caches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    real = parser.add_mutually_exclusive_group(required=True)
    real.add_argument("--real", help="the real videos: a folder (searched recursively) or a CSV with a 'videos' column")
    real.add_argument("--real-stats", metavar="FILE", help="real statistics saved by an earlier --save-real-stats")
    parser.add_argument("--fake", required=True, help="the generated videos: a folder or a CSV with a 'videos' column")
    parser.add_argument("--data-dir", default=None, help="root of the CSVs' relative paths (default: each CSV's folder)")
    parser.add_argument("--real-split", default=None, metavar="TEXT",
                        help="name of the real split, recorded in the report (e.g. 'UCF-101 train, all 3 splits')")
    parser.add_argument("--output", default=None, metavar="JSON", help="write the report (fvd, protocol) to this file")
    parser.add_argument("--save-real-stats", default=None, metavar="FILE", help="save the real set's statistics for reuse")
    parser.add_argument("--overwrite", action="store_true", help="replace --output / --save-real-stats files that exist")
    parser.add_argument("--fvd-weights", default=None, metavar="FILE", help=weights_help())
    group = parser.add_argument_group("protocol (recorded in the report)")
    group.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    group.add_argument("--stride", type=int, default=1, help="take every N-th frame within a clip (default 1)")
    group.add_argument("--clips-per-video", type=int, default=1,
                       help="clips per video (default 1, from the first frame); a video too short for N distinct "
                       "clips gives its distinct ones only, and the report says how many videos did")
    group.add_argument("--clip-starts", choices=CLIP_STARTS, default="even",
                       help="with several clips per video: evenly spread or random starts (default even)")
    group.add_argument("--seed", type=int, default=0, help="seed of random clip starts (default 0)")
    group.add_argument("--resolution", type=int, default=None, metavar="PX",
                       help="resize (short side) and center-crop frames to PXxPX before I3D's own resize to 224 "
                       "(e.g. the generator's training resolution); default: frames as decoded")
    add_runtime(parser, dtype=False, batch_clips=DEFAULT_BATCH_CLIPS, batch_clips_help="clips per I3D forward pass")
    parser.set_defaults(dtype="fp32")  # I3D features are always fp32


def add_evaluate_fvd_arguments(parser: argparse.ArgumentParser) -> None:
    """``--fvd`` and its options on ``vidtwin evaluate``."""
    group = parser.add_argument_group("reconstruction FVD")
    group.add_argument("--fvd", action="store_true", help="also compute the FVD of the reconstructions against the inputs")
    group.add_argument("--fvd-weights", default=None, metavar="FILE", help=weights_help())
    group.add_argument("--fvd-frames", type=int, default=16, metavar="N", help="frames per FVD clip (default 16)")
    group.add_argument("--fvd-stride", type=int, default=1, metavar="N", help="frame stride within an FVD clip (default 1)")


def run(args: argparse.Namespace) -> int:
    try:
        run_fvd(args, inference_options(args))  # checks, statistics, report: vidtwin/inference/fvd_command.py
    except FVDStopped as stopped:
        print(f"{args.prog}: {stopped}", file=sys.stderr, flush=True)
        return 128 + stopped.signum  # as a process killed by the signal reports it: 143 for SIGTERM
    return 0
