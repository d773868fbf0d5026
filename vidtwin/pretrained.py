"""One save/load stack for the three models: the autoencoder (`VidTwin`), the latent generator
(`LatentGenerator`) and the world model (`WorldModel`).

Each model class mixes in :class:`PretrainedModel` and declares its :class:`ModelFormat`; the mixin
gives it ``from_pretrained``, ``save_pretrained`` and ``push_to_hub``. A model loads from

- a ``save_pretrained`` folder: ``config.json`` (``{"format": NAME, "format_version": N, CONFIG_KEY:
  {...}}``, checked to be this format in a version this code reads) + ``model.safetensors``;
- a ``vidtwin train`` run folder: its newest readable checkpoint, by :func:`newest_valid_checkpoint`,
  the rule ``--resume`` uses too;
- a checkpoint file (EMA weights when it stores them, unless ``ema=False``);
- a Hub repo id (``owner/name[@revision]``) or ``hf://`` reference, through the Hub cache.

Every load is strict (a missing, unexpected or mis-shaped key is an error naming the keys) and
unpickles nothing but tensors unless ``allow_unsafe_pickle=True``.

Layers: this module reads files through :mod:`vidtwin.state_dict_io` and the Hub through
:mod:`vidtwin.hub`, and imports no model and no Lightning; the model modules import it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

import torch

from .atomic_io import atomic_path, atomic_write_text
from .errors import UserError
from .hints import Verbatim, command
from .hub import (
    CONFIG_FILE, WEIGHTS_FILE, is_hub_reference, is_repo_id, parse_hub_reference, render_model_card, upload_folder,
)
from .state_dict_io import (
    CheckpointError, check_state_dict, load_checkpoint_object, read_checkpoint_state_dict, resolve_pretrained_location,
)

logger = logging.getLogger(__name__)

# A `vidtwin train` run folder: RUN/config.yaml and RUN/checkpoints/*.ckpt.
RUN_CONFIG_FILE = "config.yaml"
RUN_CHECKPOINTS = "checkpoints"
MODEL_CARD_FILE = "README.md"
# Entries of a `vidtwin train` checkpoint that every training module writes (vidtwin.training.contract,
# vidtwin.training.ema); defined here so that reading them needs no Lightning.
TRAINING_STATE_KEY = "vidtwin_training"  # {"train_step": updates, ...}
EMA_STATE_KEY = "ema_state_dict"  # the EMA weights, the model's own names (no module prefix)

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------- the newest readable checkpoint
def checkpoint_update(path: PathLike) -> int:
    """The update count a `vidtwin train` checkpoint stores; raises when the file is not a whole checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # header only
    return int(checkpoint[TRAINING_STATE_KEY]["train_step"])


def newest_valid_checkpoint(folder: PathLike, purpose: str = "resume from",
                            advice: Optional[str] = None) -> Tuple[Path, int]:
    """``(checkpoint, update)`` of the readable checkpoint with the most updates in ``folder``
    (a run's ``checkpoints/``); ties go to the newer file.

    Unreadable files (truncated by a kill or a full disk) are skipped with a warning; raises
    CheckpointError "cannot PURPOSE FOLDER: ..." when none is readable. Both ``vidtwin train --resume``
    and every model's loading of a run folder take this rule.
    """
    folder = Path(folder)
    candidates = sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith(".") and p.is_file())
    best: Optional[Tuple[int, float, Path]] = None
    for path in candidates:
        try:
            update = checkpoint_update(path)
        except Exception as error:  # truncated zip, foreign pickle, missing keys: all mean "not usable"
            logger.warning("skipping %s: not a complete training checkpoint (%s: %s)", path, type(error).__name__,
                           " ".join(str(error).split())[:200])
            continue
        key = (update, path.stat().st_mtime, path)
        best = key if best is None or key[:2] > best[:2] else best
    if best is None:
        found = f"none of its {len(candidates)} .ckpt files is readable" if candidates else "it holds no .ckpt file"
        advice = advice or f"start a new run with {command('train', '--base', Verbatim('CONFIG'))}"
        raise CheckpointError(f"cannot {purpose} {folder}: {found}; {advice}")
    return best[2], best[0]


def is_run_directory(path: Path) -> bool:
    """A `vidtwin train` run folder (and not a save_pretrained folder, which has a config.json)."""
    return path.is_dir() and not (path / CONFIG_FILE).is_file() and (
        (path / RUN_CHECKPOINTS).is_dir() or (path / RUN_CONFIG_FILE).is_file())


def run_directory_of(checkpoint: Path) -> Optional[Path]:
    """The run folder that holds ``checkpoint`` in its ``checkpoints/``, or None."""
    run = checkpoint.parent.parent
    return run if checkpoint.parent.name == RUN_CHECKPOINTS and (run / RUN_CONFIG_FILE).is_file() else None


def read_run_config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as plain containers, interpolations resolved."""
    from omegaconf import OmegaConf

    path = run_dir / RUN_CONFIG_FILE
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # OmegaConf and YAML raise many types
        raise CheckpointError(f"cannot read the run's config {path}: {' '.join(str(error).split())}") from None


# ---------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class ModelFormat:
    """How one model class is stored: names in ``config.json`` and in `vidtwin train` checkpoints."""

    name: str  # config.json "format"
    version: int  # the newest format_version this code reads and writes
    kind: str  # in messages: "autoencoder", "generator", "world model"
    config_key: str  # the config.json entry holding the model config
    config_class: Any  # from_dict(values) -> config; to_dict() on the way back
    state_prefix: str  # the training module's attribute holding the model, with a dot
    other_hint: str  # what to do when a folder holds something else
    # The `vidtwin train` checkpoint entry {"config": ..., "autoencoder": ...} of a model that records its
    # config there (the latent models); None: the config comes from the run's config.yaml.
    checkpoint_key: Optional[str] = None
    # config.json and checkpoints also record {"config", "ckpt"} of the autoencoder whose latents
    # the model was trained on (the attribute ``autoencoder_files``).
    records_autoencoder: bool = False
    upload_message: str = "Upload VidTwin model"


def _a(noun: str) -> str:
    """``noun`` with its indefinite article, for messages: "an autoencoder", "a generator"."""
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def read_config_json(directory: PathLike, fmt: ModelFormat) -> dict:
    """The whole ``config.json`` of a save_pretrained folder, checked to be ``fmt`` in a version
    this code reads (a folder of another library or model, or of a newer release, is refused)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}: it is not a save_pretrained folder of {_a(fmt.kind)} "
                              "(give the folder that save_pretrained wrote, a `vidtwin train` run folder or a checkpoint)")
    try:
        values = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    found = values.get("format") if isinstance(values, dict) else None
    if found != fmt.name or not isinstance(values.get(fmt.config_key), dict):
        raise CheckpointError(f"{path} is not a VidTwin {fmt.kind} config: its format is {found!r}, not "
                              f"{fmt.name!r}; {fmt.other_hint}")
    version = values.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > fmt.version:
        raise CheckpointError(f"{path} has format_version {version!r}; this code reads versions up to "
                              f"{fmt.version}: update the vidtwin package to load it")
    return values


def config_from_dict(fmt: ModelFormat, values: Any, where: Any):
    """``fmt.config_class.from_dict(values)``, any refusal as one CheckpointError naming ``where``."""
    if isinstance(values, fmt.config_class):
        return values
    if not isinstance(values, Mapping):
        raise CheckpointError(f"{where}: expected a {fmt.config_class.__name__} or a dict of its fields, got "
                              f"{type(values).__name__}")
    try:
        return fmt.config_class.from_dict(dict(values))
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # the config classes' own errors are ValueErrors
        raise CheckpointError(f"{where} holds no valid {fmt.kind} config ({error})") from None


def training_weights(checkpoint: Mapping, path: Path, prefix: str, ema: Optional[bool]) -> Dict[str, torch.Tensor]:
    """The model's weights in a `vidtwin train` checkpoint: its EMA weights when stored (``ema=None``)
    or asked for (``ema=True``), else its ``state_dict`` entries under ``prefix``, stripped."""
    if ema is not False and isinstance(checkpoint.get(EMA_STATE_KEY), dict):
        return dict(checkpoint[EMA_STATE_KEY])
    if ema:
        raise CheckpointError(f"{path} stores no EMA weights ({EMA_STATE_KEY})")
    return {key[len(prefix):]: value for key, value in checkpoint.get("state_dict", {}).items()
            if key.startswith(prefix)}


# ---------------------------------------------------------------------------- the mixin
class PretrainedModel:
    """``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for a model class (an
    ``nn.Module`` with a ``config``) that declares ``pretrained_format``.

    Hooks a class may override: :meth:`_read_checkpoint` (a checkpoint file -> config and
    weights; the default reads a `vidtwin train` checkpoint that records the config under
    ``checkpoint_key``), :meth:`_config_for_repo_file` (the config of a Hub repo that holds one
    file), :meth:`checked_weights` (the strict check), :meth:`pretrained_config` (what ``config.json``
    stores) and :meth:`model_card`.
    """

    pretrained_format: ClassVar[ModelFormat]

    # ------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: PathLike, device: Union[str, torch.device] = "cpu", *, config=None,
                        ema: Optional[bool] = None, allow_unsafe_pickle: bool = False, revision: Optional[str] = None,
                        cache_dir: Optional[str] = None):
        """Load a model, with strict key checking, in eval mode on ``device``.

        name_or_path: a ``save_pretrained`` folder, a ``vidtwin train`` run folder (its newest readable
            checkpoint), a checkpoint file, a Hub repo id (``owner/name[@revision]``) or an
            ``hf://owner/name[@revision][/file]`` reference. A local path wins over a repo id of
            the same spelling.
        config: the model config to use instead of the one the files record (a config object or
                a dict of its fields); needed for a bare weights file outside a run folder.
        ema: the EMA weights of a training checkpoint: None when stored, True required, False never.
        allow_unsafe_pickle: unpickle any Python object of a trusted ``.ckpt``.
        """
        fmt = cls.pretrained_format
        if config is not None:
            config = cls._config_argument(config)
        reference = str(name_or_path)
        local = Path(reference)
        options = dict(config=config, ema=ema, allow_unsafe_pickle=allow_unsafe_pickle)
        if not is_hub_reference(reference) and local.is_dir():
            if is_run_directory(local):
                checkpoint, update = newest_valid_checkpoint(
                    local / RUN_CHECKPOINTS, f"load {_a(fmt.kind)} from the run",
                    "give a checkpoint file or a save_pretrained folder instead")
                logger.info("loading %s (update %d)", checkpoint, update)
                model = cls._from_checkpoint(checkpoint, run_dir=local, **options)
            else:
                model = cls._from_folder(local, config)
        elif not is_hub_reference(reference) and local.is_file():
            model = cls._from_checkpoint(local, run_dir=run_directory_of(local), **options)
        elif is_hub_reference(reference) or is_repo_id(reference):
            location = resolve_pretrained_location(reference, revision, cache_dir)
            if location.is_dir():
                model = cls._from_folder(location, config)
            else:  # one file: the one the reference names, or the repo's official Lightning file
                if config is None and parse_hub_reference(reference)[2] is None:
                    config = cls._config_for_repo_file(reference)
                model = cls._from_checkpoint(location, run_dir=None, **{**options, "config": config})
        else:
            state = ("does not exist" if not local.exists() else
                     f"is no `vidtwin train` run folder, checkpoint file or save_pretrained folder of {_a(fmt.kind)}")
            raise CheckpointError(f"checkpoint not found: {reference} {state}, nor is it a Hub repo id (owner/name)")
        return model.to(device).eval()

    @classmethod
    def _from_folder(cls, directory: Path, config=None):
        """A save_pretrained folder; ``config`` replaces the one of its config.json."""
        fmt = cls.pretrained_format
        values = {} if config is not None else read_config_json(directory, fmt)
        if config is None:
            config = config_from_dict(fmt, values[fmt.config_key], directory / CONFIG_FILE)
        state = read_checkpoint_state_dict(directory)
        return cls._built(config, state, directory, values.get("autoencoder"))

    @classmethod
    def _from_checkpoint(cls, path: Path, run_dir: Optional[Path], config, ema: Optional[bool],
                         allow_unsafe_pickle: bool):
        config, state, autoencoder = cls._read_checkpoint(path, run_dir, config, ema, allow_unsafe_pickle)
        return cls._built(config, state, path, autoencoder)

    @classmethod
    def _built(cls, config, state: Mapping[str, torch.Tensor], source, autoencoder: Optional[dict] = None):
        state = cls._checked_before_building(config, state, source)
        model = cls(config)
        model.load_state_dict(state, strict=True)
        if cls.pretrained_format.records_autoencoder:
            model.autoencoder_files = autoencoder
            # Where the record was read: relative paths in it are looked for around it (decoding_autoencoder).
            model.loaded_from = Path(source) if isinstance(source, (str, Path)) else None
        return model

    @classmethod
    def _checked_before_building(cls, config, state: Mapping[str, torch.Tensor], source) -> Dict[str, torch.Tensor]:
        """``state`` checked (:meth:`checked_weights`) against the model ``config`` describes, built on
        the ``meta`` device: shapes without memory. A config whose sizes do not belong to the weights
        (a few edited numbers in config.json can ask for tens of GB) is refused before anything is allocated."""
        with torch.device("meta"):
            skeleton = cls(config)
        try:
            return skeleton.checked_weights(state, source)
        except CheckpointError as error:
            expected = skeleton.state_dict().values()
            expected_count, given_count = sum(t.numel() for t in expected), sum(t.numel() for t in state.values())
            if expected_count == given_count:
                raise
            size = sum(t.numel() * t.element_size() for t in expected) / 1e9
            details = str(error).removeprefix(f"{source}: ")
            raise CheckpointError(f"{source}: the {cls.pretrained_format.kind} config describes {expected_count:,} "
                                  f"weight values ({size:.3g} GB) but the weights hold {given_count:,}: nothing "
                                  f"was built; {details}") from None

    # ------------------------------------------------------------------------ hooks
    @classmethod
    def _config_argument(cls, config):
        """``from_pretrained``'s ``config`` as a config object (given as one, or as a dict of its fields)."""
        return config_from_dict(cls.pretrained_format, config, "config")

    @classmethod
    def _read_checkpoint(cls, path: Path, run_dir: Optional[Path], config, ema: Optional[bool],
                         allow_unsafe_pickle: bool) -> Tuple[Any, Dict[str, torch.Tensor], Optional[dict]]:
        """(config, weights, autoencoder record) of a checkpoint file. This default reads a
        `vidtwin train` checkpoint that records the model's config under ``checkpoint_key``, or, with
        ``config`` given, a ``.safetensors`` file of the weights."""
        fmt = cls.pretrained_format
        if path.suffix == ".safetensors":
            if config is None:
                raise CheckpointError(f"{path} holds weights only: give the {fmt.kind}'s config (config=...)")
            return config, read_checkpoint_state_dict(path), None
        checkpoint = load_checkpoint_object(path, allow_unsafe_pickle)
        entry = checkpoint.get(fmt.checkpoint_key)
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path} is not a checkpoint of the {fmt.kind} (no {fmt.checkpoint_key} entry); "
                                  f"{fmt.other_hint}")
        if config is None:
            config = config_from_dict(fmt, entry.get("config"), path)
        return config, training_weights(checkpoint, path, fmt.state_prefix, ema), entry.get("autoencoder")

    @classmethod
    def _config_for_repo_file(cls, reference: str):
        """The config for the single file a Hub repo without ``config.json`` offers."""
        fmt = cls.pretrained_format
        raise CheckpointError(f"{reference} holds no {fmt.kind} ({CONFIG_FILE} + {WEIGHTS_FILE}); {fmt.other_hint}")

    def upgrade_state_dict(self, state: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """Rename, in ``state``, the names of an older release (none by default); returns ``state``."""
        return state

    def checked_weights(self, state: Mapping[str, torch.Tensor], source: Any = "checkpoint") -> Dict[str, torch.Tensor]:
        """``state`` as :meth:`load_weights` loads it, every key, shape, dtype and value checked
        (``vidtwin.state_dict_io.check_state_dict``); an error names ``source`` and every bad tensor.
        Works on a model built on the ``meta`` device."""
        state = self.upgrade_state_dict(dict(state))
        try:
            check_state_dict(state, self.state_dict(), "checkpoint", f"the {self.pretrained_format.kind} config")
        except CheckpointError as error:
            raise CheckpointError(f"{source}: {error}") from None
        return state

    def load_weights(self, state: Mapping[str, torch.Tensor], source: Any = "checkpoint") -> None:
        """Strictly load ``state`` into this model; an error names ``source`` and every bad tensor."""
        self.load_state_dict(self.checked_weights(state, source), strict=True)

    def pretrained_config(self) -> dict:
        """The model config as ``config.json`` stores it."""
        return self.config.to_dict()

    def model_card(self, repo_id: str = "OWNER/NAME", **fields) -> str:
        """The model card (``README.md``) that ``save_pretrained`` writes and ``push_to_hub`` uploads."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ saving and sharing
    def write_pretrained(self, directory: PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors``; each file appears only when complete."""
        from safetensors.torch import save_file

        fmt = self.pretrained_format
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as temp:
            save_file(weights, str(temp), metadata={"format": fmt.name, "format_version": str(fmt.version)})
        values = {"format": fmt.name, "format_version": fmt.version, fmt.config_key: self.pretrained_config()}
        if fmt.records_autoencoder and getattr(self, "autoencoder_files", None):
            values["autoencoder"] = self.autoencoder_files
        atomic_write_text(directory / CONFIG_FILE, json.dumps(values, indent=2))
        return directory

    def save_pretrained(self, save_directory: PathLike, *, repo_id: Optional[str] = None, push_to_hub: bool = False,
                        model_card_kwargs: Optional[dict] = None, **push_kwargs):
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` (kept when
        the folder already has one) into ``save_directory``, each complete or absent. With
        ``push_to_hub=True`` also upload them to ``repo_id`` (default: the folder's name) and
        return the commit's URL."""
        directory = self.write_pretrained(save_directory)
        card = directory / MODEL_CARD_FILE
        if not card.exists():
            atomic_write_text(card, self.model_card(repo_id or "OWNER/NAME", **(model_card_kwargs or {})))
        if push_to_hub:
            push_kwargs.setdefault("commit_message", self.pretrained_format.upload_message)
            return upload_folder(directory, repo_id or directory.name, **push_kwargs)
        return None

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: Optional[dict] = None, **upload_kwargs) -> str:
        """Upload ``config.json``, ``model.safetensors`` and the model card to the Hub repo
        ``repo_id`` (created if needed) in one commit; returns the commit's URL. Keyword
        arguments: ``commit_message``, ``private``, ``token``, ``branch``, ``create_pr`` and those
        of ``HfApi.upload_folder``."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, repo_id=repo_id, model_card_kwargs=model_card_kwargs)
            upload_kwargs.setdefault("commit_message", self.pretrained_format.upload_message)
            return upload_folder(folder, repo_id, **upload_kwargs)


class RecordedAutoencoderError(ValueError, UserError):
    """The autoencoder that decodes a latent model's samples cannot be found: none given, none recorded."""


class OtherWeightsError(RecordedAutoencoderError):
    """An autoencoder with other weights than the ones that encoded a latent model's training data."""


# The record of the autoencoder a latent model (generator, world model) was trained with: the model's
# ``autoencoder_files``, written under "autoencoder" in config.json and in `vidtwin train` checkpoints:
#   "config", "ckpt": its files as the training config named them (None when none was named);
#   "weights_fingerprint": the latent dataset's, i.e. of the weights that encoded the training data
#       (vidtwin.latents.latent_file.weights_fingerprint); whatever decodes the model's output must have it;
#   "working_dir": the absolute folder training ran in, against which relative "config"/"ckpt" were written.
# Files written before the last two were recorded lack them: they load, and nothing is checked.
FINGERPRINT_FIELD = "weights_fingerprint"
WORKING_DIR_FIELD = "working_dir"


def autoencoder_record(config: Any, ckpt: Any, fingerprint: Optional[str], working_dir: PathLike) -> dict:
    """The ``autoencoder_files`` record that training writes (see above)."""
    return {"config": config, "ckpt": ckpt, FINGERPRINT_FIELD: fingerprint, WORKING_DIR_FIELD: str(working_dir)}


def _search_folders(working_dir: Optional[str], loaded_from: Optional[Path]) -> list:
    """Where a recorded relative path is looked for, in order: the folder training ran in, then the
    folder of the model's files and each folder above it (a run copied or moved with its clone
    keeps its relative place there). Never the current folder as such: a clone's own
    ``logs/digits_ae`` is another autoencoder than the generator's."""
    folders = [Path(working_dir)] if working_dir else []
    if loaded_from is not None:
        start = Path(loaded_from).absolute()
        folders += ([start] if start.is_dir() else []) + list(start.parents)
    return folders


def resolve_recorded_path(path: Any, working_dir: Optional[str], loaded_from: Optional[Path]) -> Optional[str]:
    """A recorded config or checkpoint path as it exists here: ``hf://`` references as they are;
    absolute ones where they are; relative ones (and absolute ones inside the recorded working
    folder that are gone, as in a moved clone) in the first of :func:`_search_folders` that holds
    them. None when it exists nowhere."""
    text = str(path)
    if is_hub_reference(text):
        return text
    if Path(text).is_absolute():
        if Path(text).exists() or not working_dir or not Path(text).is_relative_to(working_dir):
            return text if Path(text).exists() else None
        text = str(Path(text).relative_to(working_dir))
    for folder in _search_folders(working_dir, loaded_from):
        if (folder / text).exists():
            return str(folder / text)
    return None


@dataclass(frozen=True)
class DecodingAutoencoder:
    """The autoencoder chosen to decode a latent model's output (:func:`decoding_autoencoder`)."""

    config: Any  # YAML path, list of YAML paths or None (a save_pretrained folder or run folder needs none)
    ckpt: str
    fingerprint: Optional[str]  # of the weights that encoded the model's training data; None: not recorded
    recorded: bool  # the one the model records (else the one given)
    what: str  # the model, in messages: "generator", "world model"

    def check_weights(self, found: str, allow_other_weights: bool = False, option: str = "--allow-other-weights") -> None:
        """Refuse, in one line, an autoencoder whose weights fingerprint ``found`` is not the one its
        training data was encoded with; ``allow_other_weights`` lets it pass. Nothing to check
        against when the model records no fingerprint."""
        if self.fingerprint is None or found == self.fingerprint or allow_other_weights:
            return
        if self.recorded:
            raise OtherWeightsError(
                f"the autoencoder this {self.what} records, {self.ckpt}, now holds other weights (fingerprint {found}) "
                f"than the ones that encoded its training data ({self.fingerprint}), e.g. it was trained further; "
                f"give the checkpoint that encoded them with --ckpt, or pass {option} to decode with these")
        raise OtherWeightsError(
            f"the autoencoder {self.ckpt} has other weights (fingerprint {found}) than the ones that encoded this "
            f"{self.what}'s training data ({self.fingerprint}), and would decode noise; give that autoencoder with "
            f"--config/--ckpt, or pass {option} to decode with these")

    def describe(self, found: str) -> str:
        """The line every command that decodes says: which autoencoder, with which weights."""
        if self.fingerprint is None:
            check = f"the {self.what} records no fingerprint to check it against"
        elif found == self.fingerprint:
            check = f"those that encoded the {self.what}'s training data"
        else:
            check = f"not those that encoded the {self.what}'s training data ({self.fingerprint}): --allow-other-weights"
        origin = f"the one the {self.what} records" if self.recorded else "given"
        return f"autoencoder {self.ckpt} ({origin}), weights fingerprint {found}: {check}"


def decoding_autoencoder(model: Any, config: Any = None, ckpt: Optional[str] = None,
                         what: str = "generator") -> DecodingAutoencoder:
    """The autoencoder that decodes ``model``'s latents: the given ``config``/``ckpt``, else the
    one it records (``autoencoder_files``, written at training), its relative paths resolved by
    :func:`resolve_recorded_path`; with the weights fingerprint it must have. ``what`` names the
    model in messages."""
    recorded = getattr(model, "autoencoder_files", None) or {}
    fingerprint = recorded.get(FINGERPRINT_FIELD)
    if ckpt is not None:
        return DecodingAutoencoder(config, ckpt, fingerprint, False, what)
    if config is not None:
        raise RecordedAutoencoderError("--config names the autoencoder's architecture; give its weights with --ckpt too")
    if not recorded.get("ckpt"):
        raise RecordedAutoencoderError(f"this {what} records no autoencoder; name the one that encoded its training "
                                       "data with --config and --ckpt")
    working_dir, loaded_from = recorded.get(WORKING_DIR_FIELD), getattr(model, "loaded_from", None)
    found = {}
    for key in ("config", "ckpt"):
        if recorded.get(key) is None:
            found[key] = None
            continue
        found[key] = resolve_recorded_path(recorded[key], working_dir, loaded_from)
        if found[key] is None:
            where = f" (relative to {working_dir}, where it was trained)" if working_dir and not Path(
                str(recorded[key])).is_absolute() else ""
            raise RecordedAutoencoderError(f"the autoencoder this {what} records ({key} {recorded[key]}{where}) does "
                                           "not exist here; name it with --config and --ckpt")
    return DecodingAutoencoder(found["config"], found["ckpt"], fingerprint, True, what)


__all__ = [
    "DecodingAutoencoder", "EMA_STATE_KEY", "FINGERPRINT_FIELD", "MODEL_CARD_FILE", "ModelFormat", "OtherWeightsError",
    "PretrainedModel", "RUN_CHECKPOINTS", "RUN_CONFIG_FILE", "RecordedAutoencoderError", "TRAINING_STATE_KEY",
    "WORKING_DIR_FIELD", "autoencoder_record", "checkpoint_update", "config_from_dict", "decoding_autoencoder",
    "is_run_directory", "newest_valid_checkpoint", "read_config_json", "read_run_config", "render_model_card",
    "resolve_recorded_path", "run_directory_of", "training_weights",
]
