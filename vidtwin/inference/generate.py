"""The work of ``vidtwin generate``: sample videos from a trained latent generator and decode them
(its options: :mod:`vidtwin.cli.generate`).

    vidtwin generate --generator logs/digits_gen --all-classes --num 8 --output samples/
    vidtwin generate --generator logs/digits_gen --class 3-left --class 7 --num 4 --output samples/ \\
        --steps 50 --guidance 2 --seed 1 --save-latents

The generator is a ``vidtwin train`` run directory (its newest checkpoint, EMA weights when stored), one
of its checkpoints, a ``save_pretrained`` folder or a Hub repo id. The autoencoder that decodes the
samples is ``--config``/``--ckpt`` when given, else the one the generator records (the run's
``model.params.autoencoder``). Files are ``OUT/<class>_<index>.mp4`` (``sample_<index>.mp4``
unconditionally) and, with ``--save-latents``, ``OUT/<class>_<index>.safetensors`` in the latent
file format that ``vidtwin decode`` reads.

Reproducible: the noise of a class's samples depends on ``--seed``, the class and the batch
(``--batch-clips`` samples, default 16), so the same command gives the same videos, and a class gets the same
videos whichever other classes are asked for.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from vidtwin.data.video_io import VideoWriter
from vidtwin.inference.options import InferenceError, auto_dtype, precision_context, resolve_device
from vidtwin.inference.outputs import LATENT_SUFFIX, check_writable_folder, claim_outputs
from vidtwin.inference.pipeline import to_uint8_frames
from vidtwin.pretrained import decoding_autoencoder
from vidtwin.latents.latent_file import WEIGHTS_FINGERPRINT_KEY, EncodedVideo, config_to_dict, save_latents, weights_fingerprint

logger = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass
class Sample:
    """One video to generate: its label (``num_classes`` = no class), file stem and noise batch."""

    label: int
    stem: str  # "<class>_<index>", the output file name without its extension
    seed: int  # of its batch


def file_stem(name: str) -> str:
    """A class name as a file name: characters other than letters, digits and ``._+-`` become ``_``."""
    return _UNSAFE_NAME.sub("_", name).strip("_") or "class"


def requested_labels(generator, classes: Optional[List[str]], all_classes: bool, unconditional: bool) -> List[int]:
    """The labels to sample from the command line's class options (exactly one of them)."""
    given = [option for option, value in (("--class", classes), ("--all-classes", all_classes),
                                          ("--unconditional", unconditional)) if value]
    if len(given) > 1:
        raise InferenceError(f"give one of --class, --all-classes and --unconditional, not {' and '.join(given)}")
    num_classes = generator.config.num_classes
    if unconditional or (not given and num_classes == 0):
        return [num_classes]
    if num_classes == 0:
        raise InferenceError("this generator is unconditional (trained without classes): use --unconditional")
    if not given:
        raise InferenceError(f"say what to generate: --class NAME (repeatable), --all-classes ({num_classes} classes) "
                             "or --unconditional")
    if all_classes:
        return list(range(num_classes))
    return list(dict.fromkeys(generator.class_labels(classes)))  # GeneratorSampleError names the known classes


def plan_samples(generator, labels: List[int], num: int, batch_size: int, seed: int) -> List[Sample]:
    """Every sample in output order: ``num`` per label, batched per label."""
    names = generator.config.class_names
    samples = []
    for label in labels:
        name = "sample" if label == generator.config.num_classes else file_stem(names[label] if names else str(label))
        for index in range(num):
            batch = index // batch_size
            samples.append(Sample(label, f"{name}_{index:03d}", seed * 1_000_003 + label * 1_009 + batch))
    return samples


def check_shapes(generator, autoencoder) -> None:
    """Refuse an autoencoder whose latents are not the ones the generator makes."""
    expected = {name: list(shape) for name, shape in autoencoder.config.latent_shapes().items()}
    made = {name: list(shape) for name, shape in generator.config.latent_shapes.items()}
    if expected != made:
        different = [name for name in made if made[name] != expected.get(name)]
        raise InferenceError(
            f"the generator makes latents the autoencoder cannot decode: {different[0]} is {made[different[0]]} "
            f"per clip, the autoencoder's is {expected.get(different[0])}; give the --config/--ckpt it was trained with"
        )


def run_generate(args) -> int:
    """The ``generate`` subcommand (see the module docstring); returns the exit code."""
    from vidtwin.checkpoint import load_model
    from vidtwin.generation import DEFAULT_GUIDANCE, DEFAULT_STEPS, load_generator
    from vidtwin.models import VidTwinLatents

    args.steps = DEFAULT_STEPS if args.steps is None else args.steps
    args.guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    for option, value in (("--num", args.num), ("--steps", args.steps), ("--batch-clips", args.batch_clips)):
        if value < 1:
            raise InferenceError(f"{option} must be >= 1, got {value}")
    if args.fps <= 0:
        raise InferenceError(f"--fps must be > 0, got {args.fps}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InferenceError(f"--output {output} is a file; give a folder for the generated videos")
    check_writable_folder(output)
    device = resolve_device(args.device)
    generator = load_generator(args.generator, device=device)
    labels = requested_labels(generator, args.classes, args.all_classes, args.unconditional)
    config, ckpt = decoding_autoencoder(generator, args.config, args.ckpt)
    autoencoder = load_model(config, ckpt, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle)
    check_shapes(generator, autoencoder)
    samples = plan_samples(generator, labels, args.num, args.batch_clips, args.seed)
    suffixes = (".mp4", LATENT_SUFFIX) if args.save_latents else (".mp4",)
    targets = [output / f"{sample.stem}{suffix}" for sample in samples for suffix in suffixes]
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)  # claims are files beside the outputs
    try:
        claim_outputs(args.claims, targets, [], args.overwrite)
    except InferenceError:
        if created:
            with contextlib.suppress(OSError):  # a claim taken before the refusal is released later
                output.rmdir()  # a refused run leaves nothing behind
        raise

    dtype = args.options.dtype if args.options.dtype != "auto" else auto_dtype(device)[0]
    clip_len, height, width = autoencoder.input_size
    extra = {WEIGHTS_FINGERPRINT_KEY: weights_fingerprint(autoencoder)} if args.save_latents else {}
    model_config = config_to_dict(autoencoder.config)
    batches = [[s for s in samples if s.seed == seed] for seed in dict.fromkeys(s.seed for s in samples)]
    with tqdm(total=len(samples), desc="generating", unit="video", disable=not args.options.progress) as bar:
        for batch in batches:
            conditional = generator.config.num_classes > 0 and batch[0].label < generator.config.num_classes
            latents = generator.sample([s.label for s in batch] if conditional else None, num_samples=len(batch),
                                       steps=args.steps, guidance=args.guidance, method=args.sampler,
                                       seed=batch[0].seed, progress=False)
            with torch.no_grad(), precision_context(device, dtype):
                videos = autoencoder.decode(VidTwinLatents(**latents))  # (B, 3, T, H, W) in about [-1, 1]
            for index, sample in enumerate(batch):
                with VideoWriter(output / f"{sample.stem}.mp4", args.fps) as writer:
                    writer.write(to_uint8_frames(videos[index]))  # (T, H, W, 3)
                if args.save_latents:
                    # Each latent as one clip of one tile: (1, 1, C, ...), the layout of a --spatial resize file.
                    tensors = {name: value[index:index + 1].unsqueeze(1).float().cpu() for name, value in latents.items()}
                    encoded = EncodedVideo(**tensors, fps=args.fps, num_frames=clip_len, clip_len=clip_len,
                                           original_size=(height, width), output_size=(height, width), spatial="resize",
                                           config=model_config, source=f"generated {sample.stem}", extra=extra)
                    save_latents(encoded, output / f"{sample.stem}{LATENT_SUFFIX}")
                bar.update(1)
    what = f"{len(samples)} videos" + (" and their latents" if args.save_latents else "")
    print(f"wrote {what} to {output} ({len(labels)} {'class' if len(labels) == 1 else 'classes'}, "
          f"{args.steps} {args.sampler} steps, guidance {args.guidance:g}, seed {args.seed})")
    return 0


__all__ = ["run_generate", "plan_samples", "requested_labels", "file_stem"]
