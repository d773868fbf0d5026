"""The latent file written by ``vidtwin encode`` and read by ``decode`` and ``cross``.

A latent file is a ``.safetensors`` file with three tensors and string metadata:

==============  =================================================================================
tensor          layout
==============  =================================================================================
``structure``   ``(num_clips, num_tiles, d_S, Q, h_S, w_S)`` float32
``dynamics_x``  ``(num_clips, num_tiles, d_D, T, w_D)`` float32
``dynamics_y``  ``(num_clips, num_tiles, d_D, T, h_D)`` float32
==============  =================================================================================

``num_tiles`` is 1 for ``--spatial resize``.

FSQ models (``regularizer: fsq``) write integer tokens instead of float latents:
``structure`` ``(num_clips, num_tiles, Q, h_S, w_S)``, ``dynamics_x`` ``(num_clips, num_tiles, T, w_D)``
and ``dynamics_y`` ``(num_clips, num_tiles, T, h_D)``, each in the smallest integer dtype that holds
its codebook (:func:`token_dtype`: uint8, uint16, int32 or int64). The metadata then has
``latent_kind: fsq_tokens`` and ``codebook`` (JSON levels of both latents); reading turns the tokens
back into the exact codes, so an :class:`EncodedVideo` always holds float latents. The metadata (all values are strings, as safetensors
requires) holds everything ``decode`` needs without the source video: the config identity
(``config_sha256`` and the config itself as JSON), ``fps``, ``num_frames``, ``clip_len``,
``num_clips``, ``original_height``/``original_width``, ``output_height``/``output_width``,
``spatial`` and, for tiles, ``tile_grid`` (JSON of :class:`~vidtwin.latents.layout.TileGrid`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vidtwin.hints import command
from vidtwin.atomic_io import atomic_path
from vidtwin.errors import UserError
from vidtwin.latents.layout import ClipLayout, TileGrid
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig
from vidtwin.models.regularizers import FSQRegularizer, regularizer_class

FORMAT_NAME = "vidtwin-latents"
FORMAT_VERSION = "1"
# Config fields that choose how the same function is computed (or only matter in training), so
# latents stay valid across them: an sdpa-encoded file decodes with flash attention and back.
RUNTIME_ONLY_FIELDS = frozenset({
    "attention_backend", "qformer_dropout", "entropy_loss_weight", "entropy_loss_annealing_steps",
    "entropy_loss_annealing_factor", "commitment_loss_weight",
})
# The config fields of the first latent files. A field added to VidTwinConfig after them is left
# out of a config's identity while it has its default value, so the configs (and config_sha256) of
# files written before the field stay what they were: a new field needs a default, nothing else.
FIRST_FORMAT_FIELDS = frozenset({
    "cont_num_blocks", "d_dim", "decoder_depth", "decoder_num_heads", "decoder_temporal_causal", "depth",
    "downsample_motion", "expect_ch", "hidden_size", "in_channels", "init_ch", "input_size", "mlp_ratio",
    "motion_num_blocks", "num_heads", "num_queries", "patch_size", "qformer_intermediate_size", "qformer_num_heads",
    "qformer_num_layers", "query_hidden_size", "temporal_causal",
})


def _later_field_defaults() -> dict:
    """Default (JSON) values of the VidTwinConfig fields added after the first latent files."""
    defaults = json.loads(json.dumps(VidTwinConfig().to_dict(), default=str))
    return {key: value for key, value in defaults.items() if key not in FIRST_FORMAT_FIELDS}


LEFT_OUT_AT_DEFAULT = _later_field_defaults()
FLOAT_LATENTS = "float"
FSQ_TOKENS = "fsq_tokens"
# Integer dtypes for tokens, smallest first, with the number of codes each holds.
TOKEN_DTYPES = ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.int32, 2**31), (torch.int64, 2**63))


class LatentFileError(ValueError, UserError):
    """A latent file is missing, malformed, written with another model config, or cannot be written."""


def config_to_dict(config: Any) -> dict:
    """A JSON-normalised dict of a model config (``VidTwinConfig`` or a plain mapping).

    Fields in :data:`RUNTIME_ONLY_FIELDS` are left out: they do not change what latents mean.

    Going through JSON turns tuples into lists, so a config read back from a file compares equal
    to the live one.
    """
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    plain = json.loads(json.dumps(raw, default=str))
    return {
        key: value for key, value in plain.items()
        if key not in RUNTIME_ONLY_FIELDS and not (key in LEFT_OUT_AT_DEFAULT and value == LEFT_OUT_AT_DEFAULT[key])
    }


def config_identity(config: Any) -> tuple[str, str]:
    """``(sha256 hex digest, canonical JSON)`` of a model config; equal configs give equal digests."""
    canonical = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), canonical


def describe_config_difference(expected: dict, found: dict, limit: int = 4) -> str:
    """A short ``key: file=a model=b`` list of the fields that differ between two config dicts."""
    keys = sorted(set(expected) | set(found))
    diffs = [f"{k}: file={found.get(k)!r} model={expected.get(k)!r}" for k in keys if expected.get(k) != found.get(k)]
    shown = "; ".join(diffs[:limit])
    return shown + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")


WEIGHTS_FINGERPRINT_KEY = "weights_fingerprint"  # in EncodedVideo.extra
_FINGERPRINT_SAMPLES = 64  # values hashed per tensor


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: two checkpoints of one config give different fingerprints.

    Hashes the names, shapes and up to 64 evenly spaced values of every tensor of the state_dict
    (on the CPU, in float32), so it costs little even for the published model.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
        sample = flat[::step][:_FINGERPRINT_SAMPLES].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- tokens
def codebook_levels(config: Any) -> dict | None:
    """How a model config's latents are stored: None for float latents, else the levels of its
    integer tokens, ``{"structure": [...], "dynamics": [...]}`` (its regularizer's ``stored_codebook``)."""
    plain = config_to_dict(config)
    return regularizer_class(plain).stored_codebook(plain)


def token_dtype(codebook_size: int) -> torch.dtype:
    """The smallest integer dtype that holds the indices 0..codebook_size-1 (uint8, uint16, int32, int64)."""
    for dtype, capacity in TOKEN_DTYPES:
        if codebook_size <= capacity:
            return dtype
    raise ValueError(f"a codebook of {codebook_size} codes does not fit in int64")


def is_token_dtype(dtype: torch.dtype) -> bool:
    """Whether tokens may be stored in ``dtype``: an integer type; bool is not (it holds only 0 and 1)."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def pack_tokens(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Integer token indices -> the same values in ``token_dtype(codebook_size)``, for storage."""
    if not is_token_dtype(indices.dtype) or (indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= codebook_size)):
        raise ValueError(f"tokens must be integers in [0, {codebook_size})")
    return indices.to(token_dtype(codebook_size))


def unpack_tokens(stored: torch.Tensor) -> torch.Tensor:
    """Stored tokens (any integer dtype but bool) -> int64 indices."""
    if not is_token_dtype(stored.dtype):
        raise ValueError(f"stored tokens must have an integer dtype, got {stored.dtype}")
    return stored.to(torch.int64)


@functools.lru_cache(maxsize=8)
def _quantizer(levels: tuple) -> FSQRegularizer:
    return FSQRegularizer(levels)


def _levels_of(name: str, codebook: dict) -> tuple:
    return tuple(codebook["structure" if name == "structure" else "dynamics"])


def codes_to_stored_tokens(name: str, codes: torch.Tensor, codebook: dict) -> torch.Tensor:
    """FSQ codes (B, C, *grid) of latent ``name`` -> packed tokens (B, *grid) in ``token_dtype``.

    Raises ValueError when the values are not codes of that codebook (tokens would not keep them).
    """
    quantizer = _quantizer(_levels_of(name, codebook))
    codes = codes.detach().cpu().float()
    indices = quantizer.codes_to_indices(codes)  # (B, *grid)
    if not torch.allclose(quantizer.indices_to_codes(indices), codes, rtol=0, atol=1e-3):
        raise ValueError(f"the {name} latents are not codes of the FSQ levels {list(quantizer.levels)}")
    return pack_tokens(indices, quantizer.codebook_size)


def stored_tokens_to_codes(name: str, tokens: torch.Tensor, codebook: dict) -> torch.Tensor:
    """Packed tokens (B, *grid) of latent ``name`` -> float32 FSQ codes (B, C, *grid)."""
    return _quantizer(_levels_of(name, codebook)).indices_to_codes(unpack_tokens(tokens))


def _describe_codebook(codebook: dict | None) -> str:
    if codebook is None:
        return "Gaussian (kl) latents"
    return f"FSQ levels structure {codebook['structure']}, dynamics {codebook['dynamics']}"


# ---------------------------------------------------------------------------------------- files
@dataclass
class EncodedVideo:
    """Latents of every clip (and tile) of one video plus what is needed to decode them."""

    structure: torch.Tensor  # (num_clips, num_tiles, d_S, Q, h_S, w_S)
    dynamics_x: torch.Tensor  # (num_clips, num_tiles, d_D, T, w_D)
    dynamics_y: torch.Tensor  # (num_clips, num_tiles, d_D, T, h_D)
    fps: float
    num_frames: int  # frames of the sampled source video; decoding yields exactly this many
    clip_len: int  # model frames per clip T
    original_size: tuple[int, int]  # (H, W) of the source frames
    output_size: tuple[int, int]  # (H, W) of decoded frames: the model's (resize) or original (tile)
    spatial: str  # "resize" or "tile"
    config: dict  # config_to_dict(model.config) of the encoding model: its identity, without runtime-only fields
    tile_grid: TileGrid | None = None
    source: str = ""  # file name of the source video, for messages only
    extra: dict = field(default_factory=dict)

    @property
    def layout(self) -> ClipLayout:
        return ClipLayout(num_frames=self.num_frames, clip_len=self.clip_len)

    @property
    def num_clips(self) -> int:
        return self.structure.shape[0]

    @property
    def num_tiles(self) -> int:
        return self.structure.shape[1]

    @property
    def config_sha256(self) -> str:
        return config_identity(self.config)[0]

    def check_config(self, model_config: Any, what: str = "latents") -> None:
        """Raise :class:`LatentFileError` unless these latents come from a model of ``model_config``."""
        expected = config_to_dict(model_config)
        file_codebook, model_codebook = codebook_levels(self.config), codebook_levels(expected)
        if file_codebook != model_codebook:
            raise LatentFileError(
                f"{what} were written with {_describe_codebook(file_codebook)} but this model has "
                f"{_describe_codebook(model_codebook)}; use the --config/--ckpt that encoded them"
            )
        if config_identity(expected)[0] != self.config_sha256:
            raise LatentFileError(
                f"{what} were written by a model with another config ({describe_config_difference(expected, self.config)}); "
                "use the --config/--ckpt that encoded them"
            )

    def check_weights(self, model: torch.nn.Module, what: str = "latents") -> None:
        """Raise :class:`LatentFileError` unless these latents were encoded with ``model``'s weights.

        Latents written before fingerprints were recorded pass unchecked.
        """
        recorded = self.extra.get(WEIGHTS_FINGERPRINT_KEY)
        if recorded is not None and recorded != weights_fingerprint(model):
            raise LatentFileError(
                f"{what} were encoded with other weights of this config (fingerprint {recorded}, the model's is "
                f"{weights_fingerprint(model)}); use the --ckpt that encoded them, or --allow-other-weights"
            )

    def truncated(self, num_frames: int) -> "EncodedVideo":
        """The first ``num_frames`` frames (whole clips kept; the last one is trimmed when decoding)."""
        num_frames = min(num_frames, self.num_frames)
        num_clips = ClipLayout(num_frames=num_frames, clip_len=self.clip_len).num_clips
        return EncodedVideo(
            structure=self.structure[:num_clips],
            dynamics_x=self.dynamics_x[:num_clips],
            dynamics_y=self.dynamics_y[:num_clips],
            fps=self.fps,
            num_frames=num_frames,
            clip_len=self.clip_len,
            original_size=self.original_size,
            output_size=self.output_size,
            spatial=self.spatial,
            config=self.config,
            tile_grid=self.tile_grid,
            source=self.source,
            extra=dict(self.extra),
        )


def save_latents(encoded: EncodedVideo, path: str | os.PathLike) -> Path:
    """Write ``encoded`` to ``path`` atomically (temporary file in the same folder, then rename).

    Raises:
        LatentFileError: the file cannot be written (full disk, unwritable folder); nothing is left.
    """
    path = Path(path)
    config_sha256, config_json = config_identity(encoded.config)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config_sha256": config_sha256,
        "config_json": config_json,
        "fps": repr(float(encoded.fps)),
        "num_frames": str(encoded.num_frames),
        "clip_len": str(encoded.clip_len),
        "num_clips": str(encoded.num_clips),
        "original_height": str(encoded.original_size[0]),
        "original_width": str(encoded.original_size[1]),
        "output_height": str(encoded.output_size[0]),
        "output_width": str(encoded.output_size[1]),
        "spatial": encoded.spatial,
        "tile_grid": json.dumps(encoded.tile_grid.to_dict()) if encoded.tile_grid else "",
        "source": encoded.source,
        "extra": json.dumps(encoded.extra),
    }
    codebook = codebook_levels(encoded.config)
    if codebook is None:
        tensors = {
            name: getattr(encoded, name).detach().to("cpu", torch.float32).contiguous() for name in LATENT_NAMES
        }
    else:
        metadata.update({"latent_kind": FSQ_TOKENS, "codebook": json.dumps(codebook)})
        tensors = {}
        for name in LATENT_NAMES:
            codes = getattr(encoded, name)  # (clips, tiles, C, *grid)
            try:
                tokens = codes_to_stored_tokens(name, codes.flatten(0, 1), codebook)  # (clips*tiles, *grid)
            except ValueError as error:
                raise LatentFileError(f"cannot write {path}: {error}") from None
            tensors[name] = tokens.unflatten(0, codes.shape[:2]).contiguous()  # (clips, tiles, *grid)
    try:
        with atomic_path(path) as temp:
            save_file(tensors, str(temp), metadata=metadata)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        raise LatentFileError(f"cannot write latent file {path}: {getattr(error, 'strerror', None) or error}") from None
    return path


def _float_latents(tensors: dict, metadata: dict, config: dict, path: Path) -> dict:
    """The file's tensors as float latents: FSQ tokens become their codes (exactly)."""
    kind = metadata.get("latent_kind", FLOAT_LATENTS)
    if kind == FLOAT_LATENTS:
        return tensors
    if kind != FSQ_TOKENS:
        raise LatentFileError(f"latent file {path} has unknown latent_kind {kind!r}")
    codebook = json.loads(metadata["codebook"])
    if codebook != codebook_levels(config):
        raise LatentFileError(f"latent file {path} is corrupt: its codebook does not match its config")
    codes = {}
    for name, tokens in tensors.items():
        _check_tokens(name, tokens, codebook, path)
        flat = stored_tokens_to_codes(name, tokens.flatten(0, 1), codebook)  # (clips*tiles, C, *grid)
        codes[name] = flat.unflatten(0, tokens.shape[:2])  # (clips, tiles, C, *grid)
    return codes


def _check_tokens(name: str, tokens: torch.Tensor, codebook: dict, path: Path) -> None:
    """Raise :class:`LatentFileError` naming tensor ``name`` unless it holds tokens of ``codebook``
    laid out ``(clips, tiles, *grid)``; their exact grid is checked with the codes they turn into."""
    def bad(problem: str) -> LatentFileError:
        return LatentFileError(f"latent file {path} is damaged: {name} {problem}; encode the video again")

    if not is_token_dtype(tokens.dtype):
        raise bad(f"is {tokens.dtype}, not integer FSQ tokens")
    if tokens.dim() < 3:
        raise bad(f"has shape {tuple(tokens.shape)}, not (clips, tiles, *grid)")
    codebook_size = math.prod(_levels_of(name, codebook))
    values = tokens.to(torch.int64)  # torch has no min() of uint16
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= codebook_size):
        raise bad(f"holds tokens in [{int(values.min())}, {int(values.max())}], outside the codebook's [0, {codebook_size})")


def load_latents(path: str | os.PathLike, expected_config: Any | None = None) -> EncodedVideo:
    """Read a latent file; with ``expected_config`` also check it was written by that model config.

    Raises:
        LatentFileError: the file is missing, not a VidTwin latent file, or from another config.
    """
    path = Path(path)
    if path.is_dir():
        raise LatentFileError(f"latent file {path} is a directory; give a .safetensors file written by `{command('encode')}`")
    if not path.is_file():
        raise LatentFileError(f"latent file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise LatentFileError(f"{path} is not a VidTwin latent file (write one with `{command('encode')}`)")
            missing = [name for name in LATENT_NAMES if name not in reader.keys()]
            if missing:
                raise LatentFileError(f"latent file {path} lacks the tensors {missing}")
            tensors = {name: reader.get_tensor(name) for name in LATENT_NAMES}
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise LatentFileError(f"{path} is not a readable latent file ({error})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise LatentFileError(
            f"latent file {path} has format version {metadata.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    try:
        config = json.loads(metadata["config_json"])
        tensors = _float_latents(tensors, metadata, config, path)
        if hashlib.sha256(metadata["config_json"].encode("utf-8")).hexdigest() != metadata["config_sha256"]:
            raise LatentFileError(f"latent file {path} is corrupt: its config does not match its config_sha256")
        tile_grid = TileGrid.from_dict(json.loads(metadata["tile_grid"])) if metadata["tile_grid"] else None
        encoded = EncodedVideo(
            **tensors,
            fps=float(metadata["fps"]),
            num_frames=int(metadata["num_frames"]),
            clip_len=int(metadata["clip_len"]),
            original_size=(int(metadata["original_height"]), int(metadata["original_width"])),
            output_size=(int(metadata["output_height"]), int(metadata["output_width"])),
            spatial=metadata["spatial"],
            config=config,
            tile_grid=tile_grid,
            source=metadata.get("source", ""),
            extra=json.loads(metadata.get("extra") or "{}"),
        )
    except (KeyError, ValueError, TypeError) as error:
        if isinstance(error, LatentFileError):
            raise
        raise LatentFileError(f"latent file {path} has malformed metadata ({error})") from None
    _check_contents(encoded, path)
    if expected_config is not None:
        encoded.check_config(expected_config, what=f"the latents in {path}")
    return encoded


def _check_contents(encoded: EncodedVideo, path: Path) -> None:
    """Raise :class:`LatentFileError` unless the tensors and metadata of a read file agree with each other."""
    def bad(problem: str) -> LatentFileError:
        return LatentFileError(f"latent file {path} is damaged: {problem}; encode the video again")

    if not (math.isfinite(encoded.fps) and encoded.fps > 0):
        raise bad(f"fps is {encoded.fps}")
    if encoded.num_frames < 1 or encoded.clip_len < 1:
        raise bad(f"num_frames is {encoded.num_frames} and clip_len {encoded.clip_len}")
    try:  # the per-clip shapes follow from the config; a partial config (hand-made files) skips them
        model_config = VidTwinConfig.from_dict(encoded.config)
    except (TypeError, ValueError):
        model_config = None
    if model_config is not None and encoded.clip_len != model_config.input_size[0]:
        raise bad(f"clip_len is {encoded.clip_len} but its config encodes {model_config.input_size[0]} frames")
    if encoded.spatial == "resize":
        expected_tiles = 1
        if encoded.tile_grid is not None:
            raise bad("it holds a tile grid but spatial is resize")
        if model_config is not None and tuple(encoded.output_size) != tuple(model_config.input_size[1:]):
            raise bad(f"output size {encoded.output_size} is not the model's {tuple(model_config.input_size[1:])}")
    elif encoded.spatial == "tile":
        grid = encoded.tile_grid
        if grid is None or (grid.height, grid.width) != tuple(encoded.original_size):
            raise bad(f"its tile grid does not cover the original size {encoded.original_size}")
        if tuple(encoded.output_size) != tuple(encoded.original_size):
            raise bad(f"output size {encoded.output_size} is not the original size {encoded.original_size}")
        expected_tiles = grid.num_tiles
    else:
        raise bad(f"spatial is {encoded.spatial!r}, not resize or tile")
    num_clips = encoded.layout.num_clips
    per_clip_shapes = model_config.latent_shapes() if model_config is not None else {}
    for name in LATENT_NAMES:
        tensor = getattr(encoded, name)
        if tensor.dtype != torch.float32:
            raise bad(f"{name} is {tensor.dtype}, not torch.float32")
        expected = (num_clips, expected_tiles, *per_clip_shapes.get(name, tensor.shape[2:]))
        if tuple(tensor.shape) != tuple(expected):
            raise bad(f"{name} has shape {tuple(tensor.shape)}; {encoded.num_frames} frames need {tuple(expected)}")
        if not bool(torch.isfinite(tensor).all()):
            raise bad(f"{name} holds NaN or infinite values")
