"""OmegaConf configs: loading, merging, `target`/`params` instantiation, and the model settings.

Two config dialects describe a VidTwin model:
- this project's YAML (`configs/*.yaml`): `model.params.autoencoder` holds `VidTwinConfig` fields;
- the official VidTwin YAML: `model.target` is the official autoencoder class with
  `encoder_config`, `decoder_config`, `temporal_qformer_config`, ... (translated here).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError
from .models.config import VidTwinConfig, config_fields
from .presets import preset_names, resolve_config_path

OFFICIAL_TARGET_SUFFIX = "VidAutoEncoderQformerCompactSymVidVAE"
# The official class that takes structure from a frame-shuffled copy for a share of each batch
# (`shuffle_content_ratio`); its settings translate onto this model's architecture.
OFFICIAL_DIS_TARGET_SUFFIX = "VidAutoEncoderQformerCompactSymDis"
logger = logging.getLogger(__name__)


class ConfigError(ValueError, UserError):
    """A config that cannot be used; the message says what is wrong and where."""


def load_config(paths: Union[str, Path, Sequence[Union[str, Path]]], overrides: Iterable[str] = ()) -> DictConfig:
    """Merge YAML files in order, then `key=value` dotlist overrides on top.

    Each path is a file, or the name of a config shipped with the package (`tiny`, see :mod:`vidtwin.presets`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    parts = []
    for reference in paths:
        path = resolve_config_path(reference)
        if path is None:
            raise ConfigError(f"config file not found: {reference} (nor a shipped preset: {', '.join(preset_names())})")
        try:
            parts.append(OmegaConf.load(path))
        except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as error:
            raise ConfigError(f"cannot read config {path}: {' '.join(str(error).split())}") from None
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        return OmegaConf.merge(*parts, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot merge configs: {error}") from None


# Packages whose classes a config may name as `target` unless the caller allows any target: a config
# is code (its targets are imported and called), and a config from elsewhere must not run a command.
ALLOWED_TARGET_PREFIXES = ("vidtwin.", "torch.", "lightning.", "pytorch_lightning.", "lightning_fabric.",
                           "tensorboard.", "tensorboardX.", "wandb.")
UNSAFE_PICKLE_KEY = "allow_unsafe_pickle"
# Whether the caller (e.g. `vidtwin train --allow-any-target`) lifts the package rule for the targets that
# library code builds on its own later, such as a training module's loss and optimizer.
_ANY_TARGET_ALLOWED = contextvars.ContextVar("vidtwin_any_target_allowed", default=False)


@contextlib.contextmanager
def any_target_allowed(allowed: bool = True) -> Iterator[None]:
    """Within this block, targets outside :data:`ALLOWED_TARGET_PREFIXES` may be imported; their kind is
    still checked."""
    token = _ANY_TARGET_ALLOWED.set(bool(allowed))
    try:
        yield
    finally:
        _ANY_TARGET_ALLOWED.reset(token)


@dataclass(frozen=True)
class TargetKind:
    """What a config slot may name as its ``target``: a subclass of ``base`` (a dotted path, imported
    when a target is checked), or one of ``names``, which are looked up in a table and never imported."""

    description: str  # for messages: "a Lightning Callback class"
    bases: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # registered names; a dotted path ending in one is the same name
    advice: str = ""  # appended to the message of a target of another kind

    def names_it(self, target: str) -> bool:
        return any(target == name or target.endswith("." + name) for name in self.names)


TRAINING_MODULE = TargetKind("a vidtwin.training.TrainingModule class", ("vidtwin.training.contract.TrainingModule",),
                             advice="; `vidtwin train` trains LightningModules that subclass it (see docs/training.md, "
                                    "'Training another model')")
DATA_MODULE = TargetKind("a LightningDataModule class", ("pytorch_lightning.core.datamodule.LightningDataModule",))
CALLBACK = TargetKind("a Lightning Callback class", ("pytorch_lightning.callbacks.callback.Callback",))
STRATEGY = TargetKind("a Lightning Strategy class", ("pytorch_lightning.strategies.strategy.Strategy",))
LOSS = TargetKind("a torch.nn.Module class", ("torch.nn.modules.module.Module",))
OPTIMIZER = TargetKind("a torch.optim.Optimizer class", ("torch.optim.optimizer.Optimizer",))
# The learning-rate schedule names a config may give, which vidtwin.training.schedulers builds (the official
# class names included). Defined here, below the training package, so that the target check needs no Lightning.
COSINE_SCHEDULE_NAMES = ("warmup_cosine", "LambdaWarmUpCosineScheduler", "WarmupCosine")
INVERSE_SQRT_SCHEDULE_NAMES = ("inverse_sqrt",)
CONSTANT_SCHEDULE_NAMES = ("constant",)
LR_SCHEDULE = TargetKind("a learning-rate schedule name (warmup_cosine, inverse_sqrt, constant)",
                         names=COSINE_SCHEDULE_NAMES + INVERSE_SQRT_SCHEDULE_NAMES + CONSTANT_SCHEDULE_NAMES)
# A slot that no table names (a custom module's own nested config): a class of one of the kinds above.
CONFIG_CLASS = TargetKind(
    "a class of a kind a config builds (LightningModule, data module, Callback, Logger, Strategy, "
    "torch.nn.Module, optimizer or learning-rate scheduler)",
    ("pytorch_lightning.core.datamodule.LightningDataModule", "pytorch_lightning.callbacks.callback.Callback",
     "lightning_fabric.loggers.logger.Logger", "pytorch_lightning.strategies.strategy.Strategy",
     "torch.nn.modules.module.Module", "torch.optim.optimizer.Optimizer", "torch.optim.lr_scheduler.LRScheduler"),
)
# The slots of a `vidtwin train` config, as dotted paths ("*" is one key), and what each may name.
TRAINING_SLOTS = (
    ("model", TRAINING_MODULE),
    ("data", DATA_MODULE),
    ("lightning.strategy", STRATEGY),
    ("lightning.callbacks.*", CALLBACK),
    ("model.params.loss", LOSS),
    ("model.params.optimizer", OPTIMIZER),
    ("model.params.lr_scheduler_g", LR_SCHEDULE),
    ("model.params.lr_scheduler_d", LR_SCHEDULE),
)


def _import(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def resolve_target(target: Any, slot: str, kind: TargetKind, allow_any_target: Optional[bool] = None,
                   source: str = "this config") -> Any:
    """The class that ``target`` names in config slot ``slot``, checked to be of ``kind`` before anything calls it.

    In order: a registered name of ``kind`` is returned as it is (never imported); a dotted path must
    lie under :data:`ALLOWED_TARGET_PREFIXES` (unless ``allow_any_target``) and name no private module
    before its module is imported; what it names must be a class of ``kind``, never a function.
    ``allow_any_target`` (None: as :func:`any_target_allowed` says) lifts the package rule only: a
    function is refused in every slot.
    Raises ConfigError, one line naming the slot and the target (and ``source``, the config's origin,
    when the target lies outside the allowed packages).
    """
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{slot}.target must be a dotted class path, got {target!r}")
    if kind.names_it(target):
        return target
    parts = target.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ConfigError(f"{slot}.target: {target!r} is not {kind.description}: expected a dotted path like "
                          "package.module.Class")
    if allow_any_target is None:
        allow_any_target = _ANY_TARGET_ALLOWED.get()
    if not allow_any_target:
        if not target.startswith(ALLOWED_TARGET_PREFIXES):
            raise ConfigError(f"{slot}.target: {target!r} is outside the packages a config may import "
                              f"({', '.join(ALLOWED_TARGET_PREFIXES)}); a config is code: pass --allow-any-target "
                              f"only if you trust {source}")
        if any(part.startswith("_") for part in parts):  # private modules, and __main__ modules that run on import
            raise ConfigError(f"{slot}.target: {target!r} names a private module or attribute; a config names "
                              "public classes")
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{slot}.target: {target!r} does not import: {error}") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"{slot}.target: {target!r} does not import: {module_name} has no attribute {attribute!r}")
    found = getattr(module, attribute)
    if not inspect.isclass(found):
        what = "a function" if callable(found) else f"a {type(found).__name__}"
        raise ConfigError(f"{slot}: {target} is {what}, not {kind.description}; a config names classes of the "
                          "kind its slot builds, never functions")
    bases = tuple(_import(base) for base in kind.bases)
    if not issubclass(found, bases):
        raise ConfigError(f"{slot}: {target} is not {kind.description}{kind.advice}")
    return found


def _entries(node: Any, key: str, where: str = "") -> list[tuple[str, Any]]:
    """``(path of its mapping, value)`` of every ``key`` entry in a plain config tree, at any depth
    (a container under ``key`` is searched too)."""
    found = []
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{where}.{name}" if where else str(name)
            if name == key:
                found.append((where, value))
            if name != key or isinstance(value, (dict, list)):
                found += _entries(value, key, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _entries(value, key, f"{where}[{index}]")
    return found


def unsafe_pickle_settings(node: Any, where: str = "") -> list[str]:
    """The dotted paths of every ``allow_unsafe_pickle`` set to a true value in a plain config tree."""
    return [f"{path}.{UNSAFE_PICKLE_KEY}" if path else UNSAFE_PICKLE_KEY
            for path, value in _entries(node, UNSAFE_PICKLE_KEY, where) if value]


def refuse_unsafe_pickle_settings(node: Any, where: str = "") -> None:
    """Unsafe unpickling runs a file's code, so only a command-line flag or a Python argument may allow
    it: raise ConfigError when a config sets ``allow_unsafe_pickle``."""
    found = unsafe_pickle_settings(plain_container(node), where)
    if found:
        raise ConfigError(f"{found[0]}: a config cannot allow unsafe unpickling (a pickle runs code); remove it, "
                          "and pass --allow-unsafe-pickle on the command line for a checkpoint you trust")


def _slot_kind(slot: str, slots: Sequence[tuple[str, TargetKind]]) -> TargetKind:
    parts = slot.split(".")
    for pattern, kind in slots:
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(w in ("*", p) for w, p in zip(wanted, parts)):
            return kind
    return CONFIG_CLASS


def _targets(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """``(slot, target)`` of every ``target`` key in a plain config tree; the slot is the dotted path of its mapping."""
    return [(path or "target", value) for path, value in _entries(node, "target", where)
            if not isinstance(value, (dict, list))]


def check_config_targets(config: Any, allow_any_target: Optional[bool] = None, source: str = "this config",
                         slots: Sequence[tuple[str, TargetKind]] = TRAINING_SLOTS) -> None:
    """Check every ``target`` of a whole config before anything is built, and refuse ``allow_unsafe_pickle``.

    Each target is checked against the kind of its slot (``slots``, :data:`TRAINING_SLOTS` by default;
    other slots take :data:`CONFIG_CLASS`) with :func:`resolve_target`. Raises ConfigError.
    """
    try:
        tree = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    except OmegaConfBaseException as error:  # e.g. an interpolation that names a missing key
        raise ConfigError(f"the config does not resolve: {' '.join(str(error).split())}") from None
    refuse_unsafe_pickle_settings(tree)
    for slot, target in _targets(tree):
        resolve_target(target, slot, _slot_kind(slot, slots), allow_any_target, source)


def build_from_config(config: Any, slot: str, kind: TargetKind, allow_any_target: Optional[bool] = None,
                      extra: Optional[dict] = None) -> Any:
    """``{target: a.b.C, params: {...}}`` of config slot ``slot`` -> ``C(**params, **extra)``.

    The target is checked with :func:`resolve_target` before it is called, and ``params`` may not
    set ``allow_unsafe_pickle``; ``extra`` (the caller's own arguments) may.
    """
    if config is None or not hasattr(config, "keys") or "target" not in config:
        raise ConfigError(f"{slot} must be a mapping with target and params, got {config!r}")
    try:
        params = plain_container(config.get("params")) or {}
    except OmegaConfBaseException as error:
        raise ConfigError(f"{slot}.params: {' '.join(str(error).split())}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{slot}.params must be a mapping, got {params!r}")
    refuse_unsafe_pickle_settings(params, f"{slot}.params")
    cls = resolve_target(config["target"], slot, kind, allow_any_target)
    if isinstance(cls, str):
        raise ConfigError(f"{slot}.target: {cls!r} is a registered name, not a class to build")
    try:
        return cls(**params, **(extra or {}))
    except TypeError as error:
        raise ConfigError(f"cannot build {config['target']}: {error}") from None


def get_obj_from_str(target: str, kind: TargetKind = CONFIG_CLASS) -> Any:
    """The class ``package.module.Name`` names, checked as :func:`resolve_target` does (allowed packages only)."""
    return resolve_target(target, "target", kind)


def instantiate_from_config(config: Any, **extra: Any) -> Any:
    """`{target: a.b.C, params: {...}}` -> `C(**params, **extra)`, for a slot of no particular kind.

    The target must be a class of a kind a config builds (:data:`CONFIG_CLASS`) under
    :data:`ALLOWED_TARGET_PREFIXES`; callers that know the slot use :func:`build_from_config`.
    """
    return build_from_config(config, "target", CONFIG_CLASS, extra=extra)


def plain_container(node: Any) -> Any:
    """Plain dicts and lists (interpolations resolved) for an OmegaConf node; anything else as is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def autoencoder_config_from(config: Any) -> VidTwinConfig:
    """The `VidTwinConfig` described by a loaded config, in either dialect.

    Accepts a whole run config (with a `model` section), a `model` section, a
    `{autoencoder: {...}}` mapping or a bare mapping of `VidTwinConfig` fields.
    """
    if isinstance(config, VidTwinConfig):
        return config
    if isinstance(config, (str, Path)) or (
        isinstance(config, (list, tuple)) and config and all(isinstance(p, (str, Path)) for p in config)
    ):
        config = load_config(config)
    config = plain_container(config)
    if not isinstance(config, dict):
        raise ConfigError(f"expected a mapping for the model config, got {type(config).__name__}")
    model = config.get("model", config)
    target = str(model.get("target", ""))
    params = model.get("params", {}) or {}
    try:
        if target.endswith(OFFICIAL_TARGET_SUFFIX):
            return translate_official_params(params)
        if target.endswith(OFFICIAL_DIS_TARGET_SUFFIX):
            return translate_official_params(params, shuffled_copy=True)
        if "autoencoder" in params:
            return VidTwinConfig.from_dict(params["autoencoder"])
        if "autoencoder" in model:
            return VidTwinConfig.from_dict(model["autoencoder"])
        if target.endswith(".VidTwin"):
            return VidTwinConfig.from_dict(params)
        if model and set(model) <= set(config_fields()):
            return VidTwinConfig.from_dict(model)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"invalid model config: {error}") from None
    raise ConfigError(
        "no VidTwin model settings found: expected model.params.autoencoder (this project's YAML) "
        f"or model.target ending in {OFFICIAL_TARGET_SUFFIX} or {OFFICIAL_DIS_TARGET_SUFFIX} (official YAML)"
    )


# Official options that change the function but have no counterpart here: refuse rather than ignore.
_UNSUPPORTED_TRANSFORMER = {"no_temporal": False, "temporal_group": False, "pred_sigma": False,
                            "space_scale": 1.0, "time_scale": 1.0, "freeze": None}


def translate_official_params(params: dict, shuffled_copy: bool = False) -> VidTwinConfig:
    """Map the params of an official `VidAutoEncoderQformerCompactSymVidVAE` config onto VidTwinConfig.

    Defaults are the official constructors' defaults, so a setting left out of the official YAML
    means what it meant there. `enable_flashattn` is an implementation switch and is dropped.
    shuffled_copy: the params are those of the official `VidAutoEncoderQformerCompactSymDis`; its
    `shuffle_content_ratio` (official default 0.5) becomes ours, and its `shuffle_content` is ignored,
    as that class's encode ignores it.
    """
    try:
        encoder = params["encoder_config"]["params"]
        decoder = params["decoder_config"]["params"]
        qformer = params["temporal_qformer_config"]["params"]
    except (KeyError, TypeError) as error:
        raise ConfigError(f"official config lacks {error}: need encoder_config, decoder_config, temporal_qformer_config") from None

    for section_name, section in (("encoder_config", encoder), ("decoder_config", decoder)):
        for key, neutral in _UNSUPPORTED_TRANSFORMER.items():
            if section.get(key, neutral) != neutral:
                raise ConfigError(f"official {section_name}.{key}={section[key]!r} is not supported")
    shuffle_content, shuffle_content_ratio = _official_shuffling(params, shuffled_copy)
    # Settings this model shares between encoder and decoder (with the official defaults).
    for key, default in (("hidden_size", None), ("input_size", None), ("patch_size", None),
                         ("in_channels", 3), ("mlp_ratio", 4.0)):
        if _as_list(encoder.get(key, default)) != _as_list(decoder.get(key, default)):
            raise ConfigError(
                f"official encoder_config and decoder_config disagree on {key} "
                f"({encoder.get(key, default)} vs {decoder.get(key, default)}); this model needs them equal"
            )
    hidden = encoder["hidden_size"]
    if qformer.get("encoder_hidden_size", 768) != hidden:
        raise ConfigError(
            f"temporal_qformer_config.encoder_hidden_size={qformer.get('encoder_hidden_size', 768)} "
            f"must equal the encoder hidden_size {hidden}"
        )
    _warn_unknown_official_keys(encoder, decoder, qformer)
    # VidTwinConfig field: (where the official YAML sets it, its value there or the official default)
    settings = {
        "input_size": ("encoder_config.params.input_size", _as_tuple(encoder.get("input_size", (1, 32, 32)))),
        "patch_size": ("encoder_config.params.patch_size", _as_tuple(encoder.get("patch_size", (1, 2, 2)))),
        "in_channels": ("encoder_config.params.in_channels", encoder.get("in_channels", 3)),
        "hidden_size": ("encoder_config.params.hidden_size", hidden),
        "depth": ("encoder_config.params.depth", encoder.get("depth", 12)),
        "num_heads": ("encoder_config.params.num_heads", encoder.get("num_heads", 8)),
        "decoder_depth": ("decoder_config.params.depth", decoder.get("depth", 12)),
        "decoder_num_heads": ("decoder_config.params.num_heads", decoder.get("num_heads", 16)),
        "mlp_ratio": ("encoder_config.params.mlp_ratio", encoder.get("mlp_ratio", 4.0)),
        "temporal_causal": ("encoder_config.params.temporal_casual", encoder.get("temporal_casual", True)),
        "decoder_temporal_causal": ("decoder_config.params.temporal_casual", decoder.get("temporal_casual", True)),
        "num_queries": ("temporal_qformer_config.params.num_query_tokens", qformer.get("num_query_tokens", 3)),
        "query_hidden_size": ("temporal_qformer_config.params.query_hidden_size", qformer.get("query_hidden_size", 64)),
        "qformer_num_layers": ("temporal_qformer_config.params.num_hidden_layers", qformer.get("num_hidden_layers", 6)),
        "qformer_intermediate_size": ("temporal_qformer_config.params.intermediate_size",
                                      qformer.get("intermediate_size", 768)),
        "qformer_num_heads": ("temporal_qformer_config.params.num_attention_heads", qformer.get("num_attention_heads", 8)),
        "init_ch": ("init_ch", params.get("init_ch", 128)),
        "cont_num_blocks": ("cont_num_blocks", params.get("cont_num_blocks", 2)),
        "expect_ch": ("expect_ch", params.get("expect_ch", 4)),
        "downsample_motion": ("downsample_motion", params.get("downsample_motion", False)),
        "motion_num_blocks": ("motion_num_blocks", params.get("motion_num_blocks", 2)),
        "d_dim": ("d_dim", params.get("d_dim", 16)),
        "shuffle_content": ("shuffle_content", shuffle_content),
        "shuffle_content_ratio": ("shuffle_content_ratio", shuffle_content_ratio),
    }
    defaults = {f.name: f.default for f in dataclasses.fields(VidTwinConfig)}
    for name, (where, value) in settings.items():  # decoder_* defaults are None: "as the encoder"
        _check_official_type(where, value, defaults[name] if defaults[name] is not None else defaults[name[8:]])
    try:
        return VidTwinConfig(**{name: value for name, (_, value) in settings.items()})
    except ValueError as error:
        raise ConfigError(f"invalid official model config: {error}") from None


def _official_shuffling(params: dict, shuffled_copy: bool) -> tuple[Any, Any]:
    """(shuffle_content, shuffle_content_ratio) of an official config's params (see translate_official_params)."""
    if not shuffled_copy:
        if "shuffle_content_ratio" in params:
            raise ConfigError(f"official shuffle_content_ratio belongs to model.target ...{OFFICIAL_DIS_TARGET_SUFFIX}, "
                              f"which the official {OFFICIAL_TARGET_SUFFIX} does not accept")
        return params.get("shuffle_content", False), 0.0
    if params.get("shuffle_content", False):
        logger.warning("official config: shuffle_content is ignored by %s (its encode always takes structure from "
                       "the shuffled copy); shuffle_content_ratio applies", OFFICIAL_DIS_TARGET_SUFFIX)
    # The official class derives from the CompactSym model (space Q-Former dynamics); this model keeps the
    # published architecture and adds the Dis shuffling, so say which settings are not built.
    unbuilt = sorted(set(params) & {"space_qformer_config", "retain_num_frames", "temporal_down_dim",
                                    "partial_content_motion"})
    logger.warning("official config: %s is built as this model's architecture (%s) with its shuffling; "
                   "official %s checkpoints do not load%s", OFFICIAL_DIS_TARGET_SUFFIX, OFFICIAL_TARGET_SUFFIX,
                   OFFICIAL_DIS_TARGET_SUFFIX, f"; ignored: {', '.join(unbuilt)}" if unbuilt else "")
    return False, params.get("shuffle_content_ratio", 0.5)


# The official settings that translate_official_params reads (or refuses), per section.
_OFFICIAL_TRANSFORMER_KEYS = {"input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads",
                              "mlp_ratio", "temporal_casual", "enable_flashattn", *_UNSUPPORTED_TRANSFORMER}
_OFFICIAL_QFORMER_KEYS = {"num_query_tokens", "query_hidden_size", "encoder_hidden_size", "num_hidden_layers",
                          "intermediate_size", "num_attention_heads"}


def _warn_unknown_official_keys(encoder: dict, decoder: dict, qformer: dict) -> None:
    """Name the settings of the official architecture sections that nothing reads (typos, mostly)."""
    for section, values, known in (("encoder_config", encoder, _OFFICIAL_TRANSFORMER_KEYS),
                                   ("decoder_config", decoder, _OFFICIAL_TRANSFORMER_KEYS),
                                   ("temporal_qformer_config", qformer, _OFFICIAL_QFORMER_KEYS)):
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("official config: %s.params has unknown setting(s) %s, ignored; known: %s",
                           section, ", ".join(unknown), ", ".join(sorted(known)))


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _check_official_type(where: str, value: Any, default: Any) -> None:
    """Raise ConfigError naming ``where`` unless ``value`` has the kind of the VidTwinConfig default."""
    def fits(item: Any, example: Any) -> bool:
        if isinstance(example, bool):
            return isinstance(item, bool)
        if isinstance(example, int):
            return isinstance(item, int) and not isinstance(item, bool)
        if isinstance(example, float):
            return isinstance(item, (int, float)) and not isinstance(item, bool)
        return True

    if isinstance(default, tuple):
        ok = isinstance(value, tuple) and len(value) == len(default) and all(fits(v, d) for v, d in zip(value, default))
        kind = f"a list of {len(default)} whole numbers"
    else:
        ok = fits(value, default)
        kind = {bool: "true or false", int: "a whole number", float: "a number"}.get(type(default), "set")
    if not ok:
        raise ConfigError(f"official config {where} must be {kind}, got {value!r}")


def _as_list(value: Optional[Any]) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
