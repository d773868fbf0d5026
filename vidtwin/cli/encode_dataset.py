"""`vidtwin encode-dataset`: encode a folder or CSV of videos into a sharded latent dataset, on one or many
GPUs and nodes (Lightning's ``Trainer.predict``), resumable after a kill or a SIGTERM.

    vidtwin encode-dataset --config vidtwin --ckpt hf://microsoft/vidtwin --input /data/videos --output /data/latents --devices 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import load_model
from ..errors import PartialFailure
from ..inference.options import InferenceError
from .options import add_model, add_runtime, add_video, inference_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a folder (searched recursively) or a meta CSV with a 'videos' column")
    parser.add_argument("--data-dir", default=None, help="root of the CSV's relative paths (default: the CSV's folder)")
    parser.add_argument("--output", required=True, help="the latent dataset folder (created; rerun to resume)")
    parser.add_argument("--shard-size", type=int, default=4096, metavar="CLIPS", help="clips per shard file (default 4096)")
    parser.add_argument("--overwrite", action="store_true", help="replace a latent dataset made with other settings")
    parser.add_argument("--label-column", default=None, metavar="NAME",
                        help="record each video's class from this column of the CSV --input (see docs/datasets.md)")
    parser.add_argument("--labels-from-folders", action="store_true",
                        help="record each video's class as its first folder under the folder --input (as ImageFolder)")
    parser.add_argument("--actions-column", default=None, metavar="NAME",
                        help="record each clip's action from this column of the CSV --input: one letter per clip "
                             "(e.g. RRUULDLL for 8 clips; see docs/datasets.md)")
    add_model(parser)
    add_video(parser, spatial=False)
    group = parser.add_argument_group("processes")
    group.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "auto"), help="default auto")
    group.add_argument("--devices", default="1", help="processes per node (GPUs, or CPU processes), 'auto', or GPU ids such as 0,1; default 1")
    group.add_argument("--num-nodes", type=int, default=1, help="nodes (launch with torchrun or srun); default 1")
    group.add_argument("--num-workers", type=int, default=2, help="video-decoding DataLoader workers per process; default 2")
    add_runtime(parser, device=False, batch_clips=None,
                batch_clips_help="clips per forward pass (default: as many as hold the pixels of one 16x224x224 "
                                 "clip, at least 1: 1 for the published model, 24 for 8x64x64 clips)")


def run(args: argparse.Namespace) -> int:
    args.options = inference_options(args)
    from ..optional import require

    require("pytorch_lightning", "dataset", "encode-dataset")  # it runs on Trainer.predict
    from ..inference.dataset_lock import launch_rank, output_lock
    from ..inference.dataset_plan import (ClipSampling, check_accelerator, check_launcher, count_clips, list_sources,
                                                parse_devices)
    from ..inference.encode_dataset import DatasetJob, EncodingStopped, check_output, format_summary, run_job
    from ..latents.actions import check_action_counts, read_actions
    from ..latents.labels import read_labels
    from ..latents.latent_file import config_to_dict, weights_fingerprint

    for option, value, least in (("--shard-size", args.shard_size, 1), ("--num-workers", args.num_workers, 0),
                                 ("--num-nodes", args.num_nodes, 1)):
        if value < least:
            raise InferenceError(f"{option} must be >= {least}, got {value}")
    devices = parse_devices(args.devices)
    check_accelerator(args.accelerator, devices)
    check_launcher(args.num_nodes)
    sources = list_sources(args.input, args.data_dir)
    names = [source.name for source in sources]
    labels = read_labels(args.input, names, args.label_column, args.labels_from_folders, data_dir=args.data_dir)
    actions = read_actions(args.input, names, args.actions_column, data_dir=args.data_dir)
    options = args.options
    dtype = options.dtype  # concrete: resolved for the accelerator's device type (inference_options)
    model = load_model(args.config, args.ckpt, device="cpu", allow_unsafe_pickle=args.allow_unsafe_pickle)
    sampling = ClipSampling(model.input_size[0], tuple(model.input_size[1:]), options.sample_fps, options.max_frames)
    if actions is not None:  # one letter per clip, checked before anything is written
        check_action_counts(actions, count_clips(sources, sampling, progress=options.progress))
    identity = {
        "model_config": config_to_dict(model.config),
        "weights_fingerprint": weights_fingerprint(model),  # the same check as a latent file's
        "sampling": sampling.to_dict(),
        "dtype": dtype,
    }
    job = DatasetJob(
        sources=sources, output=Path(args.output), sampling=sampling, identity=identity, shard_size=args.shard_size,
        batch_clips=sampling.default_batch_clips() if args.batch_clips is None else options.batch_clips, num_workers=args.num_workers, overwrite=args.overwrite, progress=options.progress,
        compile=options.compile,
        labels=labels.to_manifest() if labels is not None else None,
        actions=actions, actions_source=f"column {args.actions_column.strip()}" if actions is not None else "",
    )
    check_output(job)
    try:
        with output_lock(job.output):
            stats = run_job(job, model, dtype, args.accelerator, devices, args.num_nodes)
    except EncodingStopped as stopped:
        if launch_rank() == 0:  # one line for the job, not one per rank
            print(f"{args.prog}: stopped by {stopped}: the shards finished so far are kept in {job.output}; "
                  "run the same command again to resume", file=sys.stderr, flush=True)
        return 128 + stopped.signum  # as a process killed by the signal reports it: 143 for SIGTERM
    if not stats:  # ranks other than 0 report nothing
        return 0
    print(format_summary(stats, job.output))
    if stats["failures"]:
        raise PartialFailure(f"{stats['failures']} of {len(sources)} videos failed; see {job.output / 'failures.csv'}")
    return 0
