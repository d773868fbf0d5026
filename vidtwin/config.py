"""OmegaConf configs: loading, merging, `target`/`params` instantiation, and the model settings.

Two config dialects describe a VidTwin model:
- this project's YAML (`configs/*.yaml`): `model.params.autoencoder` holds `VidTwinConfig` fields;
- the official VidTwin YAML: `model.target` is the official autoencoder class with
  `encoder_config`, `decoder_config`, `temporal_qformer_config`, ... (translated here).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError
from .models.config import VidTwinConfig, config_fields
from .presets import preset_names, resolve_config_path

OFFICIAL_TARGET_SUFFIX = "VidAutoEncoderQformerCompactSymVidVAE"
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


def get_obj_from_str(target: str) -> Any:
    """Import `package.module.Name` and return Name."""
    module_name, _, attribute = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"target {target!r} is not a dotted path like package.module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"target {target!r} does not import: {error}") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"target {target!r} does not import: {module_name} has no attribute {attribute!r}")
    return getattr(module, attribute)


def instantiate_from_config(config: Any, **extra: Any) -> Any:
    """`{target: a.b.C, params: {...}}` -> `C(**params, **extra)`."""
    if config is None or "target" not in config:
        raise ConfigError(f"expected a mapping with a 'target' key, got {config!r}")
    params = config.get("params") or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)
    cls = get_obj_from_str(config["target"])
    try:
        return cls(**params, **extra)
    except TypeError as error:
        raise ConfigError(f"cannot build {config['target']}: {error}") from None


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
        f"or model.target ending in {OFFICIAL_TARGET_SUFFIX} (official YAML)"
    )


# Official options that change the function but have no counterpart here: refuse rather than ignore.
_UNSUPPORTED_TRANSFORMER = {"no_temporal": False, "temporal_group": False, "pred_sigma": False,
                            "space_scale": 1.0, "time_scale": 1.0, "freeze": None}


def translate_official_params(params: dict) -> VidTwinConfig:
    """Map the params of an official `VidAutoEncoderQformerCompactSymVidVAE` config onto VidTwinConfig.

    Defaults are the official constructors' defaults, so a setting left out of the official YAML
    means what it meant there. `enable_flashattn` is an implementation switch and is dropped.
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
    if params.get("shuffle_content", False):
        raise ConfigError("official shuffle_content=true is not supported")
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
    }
    defaults = {f.name: f.default for f in dataclasses.fields(VidTwinConfig)}
    for name, (where, value) in settings.items():  # decoder_* defaults are None: "as the encoder"
        _check_official_type(where, value, defaults[name] if defaults[name] is not None else defaults[name[8:]])
    try:
        return VidTwinConfig(**{name: value for name, (_, value) in settings.items()})
    except ValueError as error:
        raise ConfigError(f"invalid official model config: {error}") from None


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
