"""OmegaConf configs: loading, merging, `target`/`params` instantiation, and the model settings.

Two config dialects describe a VidTwin model:
- this project's YAML (`configs/*.yaml`): `model.params.autoencoder` holds `VidTwinConfig` fields;
- the official VidTwin YAML: `model.target` is the official autoencoder class with
  `encoder_config`, `decoder_config`, `temporal_qformer_config`, ... (translated here).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .models.config import VidTwinConfig, config_fields

OFFICIAL_TARGET_SUFFIX = "VidAutoEncoderQformerCompactSymVidVAE"


class ConfigError(ValueError):
    """A config that cannot be used; the message says what is wrong and where."""


def load_config(paths: Union[str, Path, Sequence[Union[str, Path]]], overrides: Iterable[str] = ()) -> DictConfig:
    """Merge YAML files in order, then `key=value` dotlist overrides on top."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    parts = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            parts.append(OmegaConf.load(path))
        except (OmegaConfBaseException, ValueError, OSError) as error:  # yaml errors are ValueErrors
            raise ConfigError(f"cannot read config {path}: {error}") from None
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


def _plain(node: Any) -> Any:
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
    config = _plain(config)
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
    try:
        return VidTwinConfig(
            input_size=tuple(encoder.get("input_size", (1, 32, 32))),
            patch_size=tuple(encoder.get("patch_size", (1, 2, 2))),
            in_channels=encoder.get("in_channels", 3),
            hidden_size=hidden,
            depth=encoder.get("depth", 12),
            num_heads=encoder.get("num_heads", 8),
            decoder_depth=decoder.get("depth", 12),
            decoder_num_heads=decoder.get("num_heads", 16),
            mlp_ratio=encoder.get("mlp_ratio", 4.0),
            temporal_causal=encoder.get("temporal_casual", True),
            decoder_temporal_causal=decoder.get("temporal_casual", True),
            num_queries=qformer.get("num_query_tokens", 3),
            query_hidden_size=qformer.get("query_hidden_size", 64),
            qformer_num_layers=qformer.get("num_hidden_layers", 6),
            qformer_intermediate_size=qformer.get("intermediate_size", 768),
            qformer_num_heads=qformer.get("num_attention_heads", 8),
            init_ch=params.get("init_ch", 128),
            cont_num_blocks=params.get("cont_num_blocks", 2),
            expect_ch=params.get("expect_ch", 4),
            downsample_motion=params.get("downsample_motion", False),
            motion_num_blocks=params.get("motion_num_blocks", 2),
            d_dim=params.get("d_dim", 16),
        )
    except ValueError as error:
        raise ConfigError(f"invalid official model config: {error}") from None


def _as_list(value: Optional[Any]) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
