"""The work of ``vidtwin generate``: sample videos from a trained latent generator and decode them
(its options: :mod:`vidtwin.cli.generate`).

    vidtwin generate --generator logs/digits_gen --all-classes --num 8 --output samples/
    vidtwin generate --generator logs/digits_gen --class 3-left --class 7 --num 4 --output samples/ \\
        --steps 50 --guidance 2 --seed 1 --save-latents

The generator is a ``vidtwin train`` run directory (its newest checkpoint, EMA weights when stored), one
of its checkpoints, a ``save_pretrained`` folder or a Hub repo id. The autoencoder that decodes the
samples is ``--config``/``--ckpt`` when given, else the one the generator records (the run's
``model.params.autoencoder``; relative paths are found where training ran, see
:func:`vidtwin.pretrained.decoding_autoencoder`). Either way its weights must be the ones that
encoded the generator's training data (``--allow-other-weights`` to decode with others), and one
line on stderr says which autoencoder decodes, with its weights fingerprint.

Files are ``OUT/<class>_<index>.mp4`` (``sample_<index>.mp4`` unconditionally) and, with
``--save-latents``, ``OUT/<class>_<index>.safetensors`` in the latent file format that ``vidtwin
decode`` reads, stamped with the weights fingerprint of the generator's training data. ``<class>``
is the class name as a file name (:func:`class_file_stems`); classes whose names give the same
file name (``猫`` and ``犬``, ``a b`` and ``a_b``) get their label in front (``0-class``), and the
report says which name each such file stem stands for.

The samples are planned and written batch by batch (:func:`plan_batches`): memory does not grow
with ``--num``. Reproducible: the noise of a class's samples depends on ``--seed``, the class and the
batch (``--batch-clips`` samples, default 16), so the same command gives the same videos, and a
class gets the same videos whichever other classes are asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vidtwin.data.video_io import VideoWriter
from vidtwin.hints import Verbatim, command
from vidtwin.inference.options import InferenceError, auto_dtype, precision_context, resolve_device
from vidtwin.inference.outputs import LATENT_SUFFIX, check_writable_folder, claim_outputs
from vidtwin.inference.pipeline import to_uint8_frames
from vidtwin.latents.latent_file import WEIGHTS_FINGERPRINT_KEY, EncodedVideo, config_to_dict, save_latents, weights_fingerprint
from vidtwin.pretrained import decoding_autoencoder
from vidtwin.state_dict_io import CheckpointError

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
# torch.Generator.manual_seed takes seeds in [-2**63, 2**64 - 1]; --seed is refused outside it.
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)
MAX_FPS = 1000.0  # a frame rate the video writer's time base represents


@dataclass
class Sample:
    """One video to generate: its label (``num_classes`` = no class), file stem and noise batch."""

    label: int
    stem: str  # "<class>_<index>", the output file name without its extension
    seed: int  # of its batch


def file_stem(name: str) -> str:
    """A class name as a file name: characters other than letters, digits and ``._+-`` become ``_``;
    no leading dot (a hidden file)."""
    return _UNSAFE_NAME.sub("_", name).strip("_").lstrip(".") or "class"


def class_file_stems(names: Sequence[str]) -> List[str]:
    """One file stem per class, unique even where the file system ignores case: :func:`file_stem`
    of the name, or, for names that share one, ``<label>-<stem>`` (unique: the label ends at the
    first ``-``). Decided over every class, so a class's files have one name whatever is asked."""
    stems = [file_stem(name) for name in names]
    counts = Counter(stem.casefold() for stem in stems)
    unique = [stem if counts[stem.casefold()] == 1 else f"{label}-{stem}" for label, stem in enumerate(stems)]
    if len({stem.casefold() for stem in unique}) < len(unique):  # a renamed stem met another class's own
        unique = [f"{label}-{stem}" for label, stem in enumerate(stems)]
    return unique


def check_options(args) -> None:
    """Every number of the command line, before any model loads: one line naming the option."""
    for option, value in (("--num", args.num), ("--steps", args.steps), ("--batch-clips", args.batch_clips)):
        if value < 1:
            raise InferenceError(f"{option} must be >= 1, got {value}")
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise InferenceError(f"--guidance must be a finite number >= 0 (1: the conditional model alone), got {args.guidance}")
    if not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        raise InferenceError(f"--fps must be a finite number in (0, {MAX_FPS:g}], got {args.fps}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise InferenceError(f"--seed must be a whole number from -2**63 to 2**64 - 1 (what torch takes), got {args.seed}")


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


def label_stems(generator) -> Dict[int, str]:
    """label -> file stem, the null label (no class) included."""
    config = generator.config
    names = config.class_names or [str(label) for label in range(config.num_classes)]
    return {**dict(enumerate(class_file_stems(names))), config.num_classes: "sample"}


def batch_seed(seed: int, label: int, batch: int) -> int:
    """The noise seed of one batch of one label; folded into torch's seed range when it leaves it
    (a seed near the range's ends), and unchanged inside it, so earlier seeds give the same videos."""
    value = seed * 1_000_003 + label * 1_009 + batch
    return value if SEED_RANGE[0] <= value <= SEED_RANGE[1] else value % 2 ** 64


def plan_batches(stems: Dict[int, str], labels: List[int], num: int, batch_size: int, seed: int) -> Iterator[List[Sample]]:
    """The samples in output order, one batch at a time: ``num`` per label, batched per label.
    A generator, so that memory stays flat in ``num``."""
    for label in labels:
        for first in range(0, num, batch_size):
            batch = first // batch_size
            yield [Sample(label, f"{stems[label]}_{index:03d}", batch_seed(seed, label, batch))
                   for index in range(first, min(first + batch_size, num))]


def plan_samples(generator, labels: List[int], num: int, batch_size: int, seed: int) -> List[Sample]:
    """Every sample of :func:`plan_batches` in one list (for a small plan)."""
    return [sample for batch in plan_batches(label_stems(generator), labels, num, batch_size, seed) for sample in batch]


def existing_outputs(output: Path, stems: Dict[int, str], labels: List[int], num: int,
                     suffixes: Sequence[str]) -> List[Path]:
    """The planned files that exist in ``output``: one listing of the folder, matched against the
    plan's names without writing the plan out (memory flat in ``num``)."""
    if not output.is_dir():
        return []
    wanted = {stems[label] for label in labels}
    found = []
    for entry in os.scandir(output):
        suffix = next((s for s in suffixes if entry.name.endswith(s)), None)
        if suffix is None:
            continue
        stem, _, index = entry.name[:-len(suffix)].rpartition("_")
        if stem in wanted and index.isascii() and index.isdigit() and int(index) < num and f"{int(index):03d}" == index:
            found.append(output / entry.name)
    return sorted(found)


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


def model_kind(reference: str) -> Optional[str]:
    """What the files at ``reference`` hold ("world model", "autoencoder", "generator"), when it can
    be told from their format or checkpoint entries; None otherwise. For the message of a
    ``--generator`` that is no generator."""
    import json

    from vidtwin.generation.world import WORLD_FORMAT
    from vidtwin.generation.generator import GENERATOR_FORMAT
    from vidtwin.models.vidtwin_ae import AUTOENCODER_FORMAT
    from vidtwin.pretrained import RUN_CHECKPOINTS, is_run_directory, newest_valid_checkpoint

    formats = (WORLD_FORMAT, GENERATOR_FORMAT, AUTOENCODER_FORMAT)
    path = Path(reference)
    try:
        if (path / "config.json").is_file():
            found = json.loads((path / "config.json").read_text()).get("format")
            return next((fmt.kind for fmt in formats if fmt.name == found), None)
        if is_run_directory(path):
            path = newest_valid_checkpoint(path / RUN_CHECKPOINTS)[0]
        if not path.is_file():
            return None
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or foreign: nothing to tell
        return None
    if not isinstance(checkpoint, dict):
        return None
    kind = next((fmt.kind for fmt in formats if fmt.checkpoint_key and fmt.checkpoint_key in checkpoint), None)
    state = checkpoint.get("state_dict")
    if kind is None and isinstance(state, dict) and any(key.startswith(AUTOENCODER_FORMAT.state_prefix) for key in state):
        kind = AUTOENCODER_FORMAT.kind
    return kind


def load_generator_argument(reference: str, device):
    """``--generator``, loaded; a world model's or an autoencoder's files are named as such."""
    from vidtwin.generation import load_generator

    try:
        return load_generator(reference, device=device)
    except CheckpointError:
        kind = model_kind(reference)
        if kind == "world model":
            play = command("play", reference, "--start", Verbatim("VIDEO"), "--actions", Verbatim("LETTERS"),
                           "--output", Verbatim("OUT.mp4"))
            raise InferenceError(f"--generator {reference} is a world model, not a generator: play it with `{play}`") from None
        if kind == "autoencoder":
            raise InferenceError(f"--generator {reference} is an autoencoder, not a generator: give the generator's "
                                 "run folder to --generator (an autoencoder goes to --ckpt)") from None
        raise


def load_decoder(generator, args, device):
    """The autoencoder that decodes the samples (given or recorded) and the weights fingerprint to
    stamp latent files with; refuses other weights than the training data's unless
    ``--allow-other-weights``, and says on stderr which autoencoder it loaded."""
    from vidtwin.checkpoint import load_model

    choice = decoding_autoencoder(generator, args.config, args.ckpt)
    autoencoder = load_model(choice.config, choice.ckpt, device=device, allow_unsafe_pickle=args.allow_unsafe_pickle)
    check_shapes(generator, autoencoder)
    found = weights_fingerprint(autoencoder)
    choice.check_weights(found, args.allow_other_weights)
    print(f"{args.prog}: {choice.describe(found)}", file=sys.stderr, flush=True)
    # The latents are the training data's kind: a file says whose they are, even when decoded with others.
    return autoencoder, choice.fingerprint


def write_sample(output: Path, sample: Sample, video: torch.Tensor, latents: Dict[str, torch.Tensor], index: int,
                 args, encoded_fields: dict) -> None:
    """``OUT/<stem>.mp4`` of one decoded ``video`` ``(3, T, H, W)`` and, with ``--save-latents``, its
    latents (row ``index`` of the batch's ``latents``) as ``OUT/<stem>.safetensors``."""
    with VideoWriter(output / f"{sample.stem}.mp4", args.fps) as writer:
        writer.write(to_uint8_frames(video))  # (T, H, W, 3)
    if args.save_latents:
        # Each latent as one clip of one tile: (1, 1, C, ...), the layout of a --spatial resize file.
        tensors = {name: value[index:index + 1].unsqueeze(1).float().cpu() for name, value in latents.items()}
        encoded = EncodedVideo(**tensors, **encoded_fields, source=f"generated {sample.stem}")
        save_latents(encoded, output / f"{sample.stem}{LATENT_SUFFIX}")


def run_generate(args) -> int:
    """The ``generate`` subcommand (see the module docstring); returns the exit code."""
    from vidtwin.generation import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from vidtwin.models import VidTwinLatents

    args.steps = DEFAULT_STEPS if args.steps is None else args.steps
    args.guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    check_options(args)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InferenceError(f"--output {output} is a file; give a folder for the generated videos")
    check_writable_folder(output)
    device = resolve_device(args.device)
    generator = load_generator_argument(args.generator, device)
    labels = requested_labels(generator, args.classes, args.all_classes, args.unconditional)
    autoencoder, latent_fingerprint = load_decoder(generator, args, device)
    stems = label_stems(generator)
    suffixes = (".mp4", LATENT_SUFFIX) if args.save_latents else (".mp4",)
    existing = existing_outputs(output, stems, labels, args.num, suffixes)
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InferenceError(f"output {existing[0]} already exists{more}; pass --overwrite to replace it")
    total = len(labels) * args.num
    conditional = generator.config.num_classes > 0 and labels[0] < generator.config.num_classes
    what = f"{len(labels)} {'class' if len(labels) == 1 else 'classes'} x {args.num}" if conditional else "unconditional"
    print(f"{args.prog}: generating {total} videos ({what}) into {output}, {args.batch_clips} per batch",
          file=sys.stderr, flush=True)

    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)  # claims are files beside the outputs
    dtype = args.options.dtype if args.options.dtype != "auto" else auto_dtype(device)[0]
    clip_len, height, width = autoencoder.input_size
    encoded_fields = dict(fps=args.fps, num_frames=clip_len, clip_len=clip_len, original_size=(height, width),
                          output_size=(height, width), spatial="resize", config=config_to_dict(autoencoder.config),
                          extra={WEIGHTS_FINGERPRINT_KEY: latent_fingerprint} if latent_fingerprint else {})
    written = 0
    try:
        with tqdm(total=total, desc="generating", unit="video", disable=not args.options.progress) as bar:
            for batch in plan_batches(stems, labels, args.num, args.batch_clips, args.seed):
                # Each batch's names are claimed while it is written, then released: a plan of any
                # length holds one batch of claims (open files), not one per video.
                with contextlib.ExitStack() as claims:
                    claim_outputs(claims, [output / f"{s.stem}{suffix}" for s in batch for suffix in suffixes], [],
                                  args.overwrite)
                    latents = generator.sample([s.label for s in batch] if conditional else None, num_samples=len(batch),
                                               steps=args.steps, guidance=args.guidance, method=args.sampler,
                                               seed=batch[0].seed, progress=False)
                    with torch.no_grad(), precision_context(device, dtype):
                        videos = autoencoder.decode(VidTwinLatents(**latents))  # (B, 3, T, H, W) in about [-1, 1]
                    for index, sample in enumerate(batch):
                        write_sample(output, sample, videos[index], latents, index, args, encoded_fields)
                        written += 1
                        bar.update(1)
    except BaseException:
        if created and written == 0:
            with contextlib.suppress(OSError):  # claims are released by now
                output.rmdir()  # a run that wrote nothing leaves nothing behind
        raise
    files = f"{total} videos" + (" and their latents" if args.save_latents else "")
    settings = (f"{what}, {args.steps} {args.sampler} steps, guidance {args.guidance:g}, seed {args.seed}" if conditional
                else f"unconditional, {args.steps} {args.sampler} steps, seed {args.seed}")
    print(f"wrote {files} to {output} ({settings})")
    names = generator.config.class_names or []
    renamed = [f"{stems[label]} = {names[label]}" for label in labels if label < len(names) and stems[label] != names[label]]
    if renamed:
        print(f"class names of the file names: {'; '.join(renamed)}")
    return 0


__all__ = ["check_options", "class_file_stems", "file_stem", "label_stems", "model_kind", "plan_batches", "plan_samples",
           "requested_labels", "run_generate"]
