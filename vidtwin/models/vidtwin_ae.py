"""The VidTwin autoencoder: one encoder, two latents (structure and dynamics), one decoder.

Module names are the official checkpoint's, so an official state_dict loads without renaming
(`vidtwin.state_dict_io.IGNORED_OFFICIAL_KEYS` lists the few official tensors that are never used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from einops import rearrange
from torch import nn

from ..hub import model_card
from ..pretrained import RUN_CONFIG_FILE, ModelFormat, PretrainedModel, config_from_dict, read_run_config
from ..state_dict_io import (
    CheckpointError, checked_autoencoder_state_dict, read_checkpoint_state_dict, split_state_dict,
)
from .config import LATENT_NAMES, VidTwinConfig
from .qformer import TemporalQFormer
from .regularizers import build_regularizer
from .st_transformer import STTDecoder, STTEncoder

DECODE_PARTS = (None, "structure", "dynamics")


@dataclass
class VidTwinLatents:
    """The two latent spaces of a batch of clips, channel-first.

    structure:  (B, d_S, Q, h_S, w_S) content and slow motion, Q learned query "frames".
    dynamics_x: (B, d_D, T, w_D) fast motion, pooled over the height (one value per column).
    dynamics_y: (B, d_D, T, h_D) fast motion, pooled over the width (one value per row).
    kl:         the KL term of the posteriors these came from (sum over all elements / B), or None.
    quantization: FSQ models: per-latent losses and codebook statistics of the quantizers these
                came from, keyed "structure/codebook_usage", "dynamics_x/entropy_loss", ...; or None.

    With ``regularizer: fsq`` the three tensors are FSQ codes: every value lies on the grid
    ``(k - L // 2) / (L // 2)`` of its channel's L levels, within [-1, 1].
    """

    structure: torch.Tensor
    dynamics_x: torch.Tensor
    dynamics_y: torch.Tensor
    kl: Optional[torch.Tensor] = None
    quantization: Optional[Dict[str, torch.Tensor]] = None

    def to(self, *args, **kwargs) -> "VidTwinLatents":
        moved = {name: getattr(self, name).to(*args, **kwargs) for name in LATENT_NAMES}
        kl = self.kl.to(*args, **kwargs) if self.kl is not None else None
        quantization = ({k: v.to(*args, **kwargs) for k, v in self.quantization.items()}
                        if self.quantization is not None else None)
        return VidTwinLatents(**moved, kl=kl, quantization=quantization)


@dataclass
class VidTwinTokens:
    """Integer FSQ tokens of a batch of clips: int64 indices into each latent's codebook.

    structure:  (B, Q, h_S, w_S) in [0, prod(structure_levels)).
    dynamics_x: (B, T, w_D) in [0, prod(dynamics_levels)).
    dynamics_y: (B, T, h_D) in [0, prod(dynamics_levels)).
    """

    structure: torch.Tensor
    dynamics_x: torch.Tensor
    dynamics_y: torch.Tensor

    def to(self, *args, **kwargs) -> "VidTwinTokens":
        return VidTwinTokens(*(getattr(self, name).to(*args, **kwargs) for name in LATENT_NAMES))


def _stride2_convs(channels: int, count: int, grow: bool) -> Tuple[nn.Sequential, int]:
    """`count` blocks of stride-2 3x3 conv + ReLU; channels double each block when `grow`."""
    layers = []
    for _ in range(count):
        out_channels = channels * 2 if grow else channels
        layers += [nn.Conv2d(channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
        channels = out_channels
    return nn.Sequential(*layers), channels


def _draw_frame_orders(clips: int, frames: int, generator: Optional[torch.Generator],
                       share: Optional[float] = None) -> Dict[int, torch.Tensor]:
    """{clip index: a random permutation of range(frames)} for the clips that get shuffled.

    The draws are the official code's, in its order, so that equal seeds give equal shuffles: clip
    by clip, a uniform number in [0, 1) that selects the clip when below ``share`` (skipped when
    ``share`` is None: every clip), then the selected clip's permutation.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    orders = {}
    for clip in range(clips):
        if share is None or torch.rand(1, generator=generator, device=device).item() < share:
            orders[clip] = torch.randperm(frames, generator=generator, device=device)
    return orders


# config.json of a save_pretrained folder: {"format": "vidtwin", "format_version": 1, "autoencoder": {...}}.
AUTOENCODER_FORMAT = ModelFormat(
    name="vidtwin", version=1, kind="autoencoder", config_key="autoencoder", config_class=VidTwinConfig,
    state_prefix="autoencoder.",
    other_hint="a generator's or world model's folder loads with LatentGenerator / WorldModel.from_pretrained",
)


class VidTwin(PretrainedModel, nn.Module):
    """Video autoencoder with decoupled structure and dynamics latents.

    Build with a `VidTwinConfig` or its fields as keyword arguments. Videos are (B, 3, T, H, W) in
    [-1, 1] with (T, H, W) == `input_size`. `VidTwin.from_pretrained` loads a save_pretrained
    folder, a `vidtwin train` run folder, a checkpoint (with `config=`, or inside its run folder) or a Hub
    repo; `save_pretrained` and `push_to_hub` write this project's format (`vidtwin.pretrained`).
    """

    pretrained_format = AUTOENCODER_FORMAT

    def __init__(self, config: Optional[VidTwinConfig] = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = VidTwinConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a VidTwinConfig or keyword settings, not both")
        self.config = config
        frames, grid_h, grid_w = config.token_grid
        width = config.hidden_size

        def transformer_args(depth, heads, causal):
            return dict(
                input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                token_grid=config.token_grid, hidden_size=width, depth=depth, num_heads=heads,
                mlp_ratio=config.mlp_ratio, temporal_causal=causal, backend=config.attention_backend,
            )

        self.encoder = STTEncoder(**transformer_args(config.depth, config.num_heads, config.temporal_causal))
        self.decoder = STTDecoder(**transformer_args(
            config.decoder_depth or config.depth,
            config.decoder_num_heads or config.num_heads,
            config.temporal_causal if config.decoder_temporal_causal is None else config.decoder_temporal_causal,
        ))

        # Structure branch: Q-Former over time, then a conv bottleneck over the token grid.
        query_width = config.query_hidden_size
        self.temporal_qformer = TemporalQFormer(
            config.num_queries, query_width, width, config.qformer_num_layers,
            config.qformer_intermediate_size, config.qformer_num_heads, config.qformer_dropout,
        )
        self.conv_in = nn.Conv2d(query_width, config.init_ch, 3, padding=1)
        self.content_downsample_blocks, bottleneck_ch = _stride2_convs(config.init_ch, config.cont_num_blocks, grow=True)
        # The regularizers turn head outputs into latents: Gaussian (2 x channels: mean, log-variance)
        # or FSQ (1 x channels). They hold no weights; dynamics_x and dynamics_y share one.
        self.structure_regularizer = build_regularizer(config, "structure")
        self.dynamics_regularizer = build_regularizer(config, "dynamics")
        self.bottle_down = nn.Conv2d(bottleneck_ch, self.structure_regularizer.head_channels(config.expect_ch), 3, padding=1)
        self.bottle_up = nn.Sequential(nn.Conv2d(config.expect_ch, bottleneck_ch, 3, padding=1), nn.ReLU())
        upsample = []
        for _ in range(config.cont_num_blocks):
            upsample += [nn.Conv2d(bottleneck_ch, bottleneck_ch // 2, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2)]
            bottleneck_ch //= 2
        self.content_upsample_blocks = nn.Sequential(*upsample)
        self.conv_out = nn.Conv2d(config.init_ch, query_width, 3, padding=1)
        # Maps the Q query outputs of one position to T frame embeddings (a 1x1 conv over the query axis).
        self.cont_emb = nn.Sequential(nn.Linear(query_width, width), nn.ReLU(), nn.Conv1d(config.num_queries, frames, 1), nn.ReLU())

        # Dynamics branch: optional per-frame downsampling, then means over H and over W.
        self.motion_head = nn.Conv2d(width, self.dynamics_regularizer.head_channels(config.d_dim), 3, padding=1)
        self.motion_emb = nn.Sequential(nn.Linear(config.d_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        if config.downsample_motion:
            self.downsample_motion_module, _ = _stride2_convs(width, config.motion_num_blocks, grow=False)
            pooled_length = config.dynamics_length[1]
            self.up_motion = nn.Sequential(nn.Linear(pooled_length, grid_h), nn.ReLU(), nn.Linear(grid_h, grid_h), nn.ReLU())

    # ------------------------------------------------------------------ properties
    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(T, H, W) of the clips this model encodes."""
        return self.config.input_size

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's last weight, used to balance the adversarial loss during training."""
        return self.decoder.get_last_layer()

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks in the backward pass instead of storing their activations."""
        self.encoder.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ encode
    def encode(self, video: torch.Tensor, sample: Optional[bool] = None,
               generator: Optional[torch.Generator] = None, shuffle: Optional[bool] = None) -> VidTwinLatents:
        """(B, 3, T, H, W) in [-1, 1] -> latents.

        sample: draw from the posteriors (True) or take their means (False). None samples only in
        training mode, so an eval-mode model is deterministic. FSQ models always return their
        quantized codes (sample has no effect) and ``latents.quantization`` instead of ``kl``.
        shuffle: apply the configured frame shuffling of the structure branch (``shuffle_content`` or
        ``shuffle_content_ratio``; nothing when neither is set). None shuffles only in training mode;
        True also in eval mode, as the official ``encode`` does whenever its flag is set.
        generator: the random source of the posterior samples and the shuffles (None: torch's global one).
        """
        self._check_video(video)
        if sample is None:
            sample = self.training
        if shuffle is None:
            shuffle = self.training
        tokens = self.encoder(video)  # (B, C, t, h, w)
        structure_tokens = self._structure_tokens(video, tokens, generator) if shuffle else tokens
        heads = (self._structure_head(structure_tokens), *self._dynamics_heads(tokens))
        regularizers = (self.structure_regularizer, self.dynamics_regularizer, self.dynamics_regularizer)
        outputs = [regularizer(head, sample, generator) for regularizer, head in zip(regularizers, heads)]
        latents = [latent for latent, _ in outputs]
        logs = dict(zip(LATENT_NAMES, (log for _, log in outputs)))
        return VidTwinLatents(*latents, **self.structure_regularizer.latent_fields(logs, video.shape[0]))

    # ------------------------------------------------------------------ tokens (fsq)
    def tokenize(self, video: torch.Tensor) -> VidTwinTokens:
        """(B, 3, T, H, W) in [-1, 1] -> integer FSQ tokens (see :class:`VidTwinTokens`); fsq models only."""
        self._require_tokens("tokenize")
        return self.latents_to_tokens(self.encode(video))

    def latents_to_tokens(self, latents: VidTwinLatents) -> VidTwinTokens:
        """FSQ codes -> their int64 codebook indices."""
        self._require_tokens("latents_to_tokens")
        return VidTwinTokens(*(self._regularizer_of(name).codes_to_indices(getattr(latents, name))
                               for name in LATENT_NAMES))

    def detokenize(self, tokens: VidTwinTokens) -> VidTwinLatents:
        """Integer tokens -> the FSQ codes they index, as latents that :meth:`decode` accepts.

        ``decode(detokenize(tokenize(x)))`` equals ``decode(encode(x))``.
        """
        self._require_tokens("detokenize")
        for name, shape in self.config.token_shapes().items():
            tensor = getattr(tokens, name)
            if tensor.dim() != len(shape) + 1 or tuple(tensor.shape[1:]) != shape:
                raise ValueError(f"tokens {name} have shape {tuple(tensor.shape)}, this model expects (B, {', '.join(map(str, shape))})")
        dtype = next(self.parameters()).dtype
        return VidTwinLatents(*(self._regularizer_of(name).indices_to_codes(getattr(tokens, name)).to(dtype)
                                for name in LATENT_NAMES))

    def _regularizer_of(self, name: str) -> nn.Module:
        return self.structure_regularizer if name == "structure" else self.dynamics_regularizer

    def _require_tokens(self, what: str) -> None:
        if not self.structure_regularizer.has_tokens:
            raise ValueError(
                f"{what} needs an FSQ model (regularizer: fsq); this model has Gaussian (kl) latents, "
                "which are continuous: use encode/decode"
            )

    def regularization_log(self, latents: VidTwinLatents, step: int) -> Dict[str, torch.Tensor]:
        """The regularization terms of ``latents`` for the loss, by name, at training update ``step``.

        kl: ``{"kl_loss"}``. fsq: ``{"aux_loss", "entropy_loss", "commitment_loss"}``; see each
        regularizer's ``loss_terms`` (:mod:`vidtwin.models.regularizers`).
        """
        return self.structure_regularizer.loss_terms(latents, self.config, step)

    def _structure_tokens(self, video: torch.Tensor, tokens: torch.Tensor,
                          generator: Optional[torch.Generator]) -> torch.Tensor:
        """The tokens the structure branch reads: ``tokens`` with the configured frame shuffling applied."""
        batch, _, frames = tokens.shape[:3]
        if self.config.shuffle_content:
            # Official shuffle_content: one permutation of the token frames per clip, after the encoder. Kept
            # for parity: the Q-Former cross-attends to its frames as a set, so only rounding changes.
            orders = _draw_frame_orders(batch, frames, generator)
            index = torch.stack([orders[clip] for clip in range(batch)]).to(tokens.device)  # (B, t)
            return tokens.gather(2, index[:, None, :, None, None].expand_as(tokens))
        if self.config.shuffle_content_ratio > 0:
            # Official ...Dis: the selected clips' input frames are permuted and encoded again; the others'
            # shuffled copy is the clip itself, whose tokens (no dropout in the encoder) are already here.
            orders = _draw_frame_orders(batch, video.shape[2], generator, share=self.config.shuffle_content_ratio)
            if not orders:
                return tokens
            clips = sorted(orders)
            shuffled = torch.stack([video[clip][:, orders[clip].to(video.device)] for clip in clips])  # (n, 3, T, H, W)
            return tokens.index_copy(0, torch.tensor(clips, device=tokens.device), self.encoder(shuffled))
        return tokens

    def _structure_head(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, _, grid_h, grid_w = tokens.shape
        sequences = rearrange(tokens, "B C T H W -> (B H W) T C")
        queries = self.temporal_qformer(sequences)  # (B*h*w, Q, q)
        query_maps = rearrange(queries, "(B H W) Q C -> (B Q) C H W", B=batch, H=grid_h, W=grid_w)
        head = self.bottle_down(self.content_downsample_blocks(self.conv_in(query_maps)))  # (B*Q, k*d_S, h_S, w_S), k = 2 (kl) or 1 (fsq)
        return rearrange(head, "(B Q) C H W -> B C Q H W", B=batch)

    def _dynamics_heads(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        frames = tokens.shape[2]
        if self.config.downsample_motion:
            per_frame = self.downsample_motion_module(rearrange(tokens, "B C T H W -> (B T) C H W"))  # (B*t, C, h', w')
            tokens = rearrange(per_frame, "(B T) C H W -> B C T H W", T=frames)
        along_width = tokens.mean(dim=-2)  # (B, C, t, w'): averaged over the height
        along_height = tokens.mean(dim=-1)  # (B, C, t, h'): averaged over the width
        return self.motion_head(along_width), self.motion_head(along_height)  # (B, k*d_D, t, w'), (B, k*d_D, t, h')

    # ------------------------------------------------------------------ decode
    def decode(self, latents: VidTwinLatents, only: Optional[str] = None) -> torch.Tensor:
        """Latents -> (B, 3, T, H, W) video in about [-1, 1].

        only: None decodes the sum of both parts; "structure" or "dynamics" decodes one part alone.
        Mixing the structure of one clip with the dynamics of another is cross-reenactment.
        """
        if only not in DECODE_PARTS:
            raise ValueError(f"only must be one of {DECODE_PARTS}, got {only!r}")
        self._check_latents(latents)
        embeddings = None
        if only in (None, "structure"):
            embeddings = self._structure_embedding(latents.structure)
        if only in (None, "dynamics"):
            dynamics = self._dynamics_embedding(latents.dynamics_x, latents.dynamics_y)
            embeddings = dynamics if embeddings is None else embeddings + dynamics
        return self.decoder(embeddings)

    def _structure_embedding(self, structure: torch.Tensor) -> torch.Tensor:
        batch = structure.shape[0]
        _, grid_h, grid_w = self.config.token_grid
        maps = rearrange(structure, "B C Q H W -> (B Q) C H W")
        maps = self.conv_out(self.content_upsample_blocks(self.bottle_up(maps)))  # (B*Q, q, H', W')
        # Upsampling can overshoot an odd token grid. The published model crops one border, taken
        # from the height, on both axes; where that would not fit the width (grids the official code
        # cannot run), the width gets its own centred border.
        top = (maps.shape[2] - grid_h) // 2
        left = top if maps.shape[2] > grid_h and top + grid_w <= maps.shape[3] else (maps.shape[3] - grid_w) // 2
        maps = maps[:, :, top:top + grid_h, left:left + grid_w]  # (B*Q, q, h, w)
        sequences = rearrange(maps, "(B Q) C H W -> (B H W) Q C", B=batch)
        frames = self.cont_emb(sequences)  # (B*h*w, t, C)
        return rearrange(frames, "(B H W) T C -> B C T H W", B=batch, H=grid_h, W=grid_w)

    def _dynamics_embedding(self, dynamics_x: torch.Tensor, dynamics_y: torch.Tensor) -> torch.Tensor:
        _, grid_h, grid_w = self.config.token_grid
        per_column = self.motion_emb(rearrange(dynamics_x, "B D T W -> B T W D"))  # (B, t, w_D, C)
        per_row = self.motion_emb(rearrange(dynamics_y, "B D T H -> B T H D"))  # (B, t, h_D, C)
        per_column = rearrange(per_column, "B T W C -> B C T W")
        per_row = rearrange(per_row, "B T H C -> B C T H")
        if self.config.downsample_motion:
            per_column, per_row = self.up_motion(per_column), self.up_motion(per_row)  # back to the token grid
        # Broadcast each profile along the axis it was averaged over.
        return per_column[:, :, :, None, :] + per_row[:, :, :, :, None]  # (B, C, t, h, w)

    def forward(self, video: torch.Tensor, sample: Optional[bool] = None,
                shuffle: Optional[bool] = None) -> Tuple[torch.Tensor, VidTwinLatents]:
        """Encode then decode. Returns (reconstruction, latents); see :meth:`regularization_log`."""
        latents = self.encode(video, sample=sample, shuffle=shuffle)
        return self.decode(latents), latents

    # ------------------------------------------------------------------ loading and saving
    # from_pretrained, save_pretrained and push_to_hub come from PretrainedModel (vidtwin.pretrained);
    # these hooks say what is the autoencoder's own: its training checkpoints record no config (the
    # run's config.yaml does), official checkpoints use official names, and a Hub repo may hold
    # just the official Lightning file.
    @classmethod
    def _config_argument(cls, config) -> VidTwinConfig:
        if isinstance(config, (str, Path, list, tuple)):  # YAML files: their dialects are vidtwin.config's
            raise CheckpointError(f"config={config!r}: VidTwin.from_pretrained takes a VidTwinConfig or a dict of its "
                                  "fields; load with a YAML config (either dialect) by vidtwin.load_model(CONFIG, REFERENCE)")
        return super()._config_argument(config)

    @classmethod
    def _read_checkpoint(cls, path, run_dir, config, ema, allow_unsafe_pickle):
        if config is None:
            if run_dir is None:
                raise CheckpointError(
                    f"{path} records no model config: give config=..., load its `vidtwin train` run folder or a "
                    "save_pretrained folder, or use vidtwin.load_model(CONFIG, CHECKPOINT) for a YAML config")
            config = cls._run_config(run_dir)
        state = read_checkpoint_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle, use_ema=ema)
        autoencoder_state, _, other = split_state_dict(state)
        autoencoder_state.update(other)  # training-only `loss.*` tensors are skipped; anything else unknown is an error
        return config, autoencoder_state, None

    @classmethod
    def _run_config(cls, run_dir) -> VidTwinConfig:
        """The autoencoder settings of a `vidtwin train` run: ``model.params.autoencoder`` of its config.yaml."""
        settings = ((read_run_config(run_dir).get("model") or {}).get("params") or {}).get("autoencoder")
        # A latent model's run names its autoencoder's files there ({"config", "ckpt"}), not its settings.
        if not isinstance(settings, dict) or (settings and set(settings) <= {"config", "ckpt"}):
            raise CheckpointError(f"{run_dir / RUN_CONFIG_FILE} has no model.params.autoencoder: not an autoencoder "
                                  "run (a generator's or world model's loads with LatentGenerator / WorldModel)")
        return config_from_dict(cls.pretrained_format, settings, run_dir / RUN_CONFIG_FILE)

    @classmethod
    def _config_for_repo_file(cls, reference) -> VidTwinConfig:
        return VidTwinConfig()  # the official file of a repo: the published architecture

    def checked_weights(self, state, source="checkpoint") -> Dict[str, torch.Tensor]:
        """Official-named weights, checked as `vidtwin.state_dict_io.checked_autoencoder_state_dict` does."""
        try:
            return checked_autoencoder_state_dict(self, state)
        except CheckpointError as error:
            raise CheckpointError(f"{source}: {error}") from None

    def model_card(self, repo_id: str = "OWNER/NAME", **fields) -> str:
        return model_card(self.config, repo_id, **fields)

    # ------------------------------------------------------------------ checks
    def _check_video(self, video: torch.Tensor) -> None:
        expected = (self.config.in_channels, *self.config.input_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"expected a video batch of shape (B, {', '.join(map(str, expected))}), got {tuple(video.shape)}; "
                "resize or tile the video to the model's input_size (see vidtwin.inference)"
            )

    def _check_latents(self, latents: VidTwinLatents) -> None:
        for name, shape in self.config.latent_shapes().items():
            tensor = getattr(latents, name)
            if tensor.dim() != len(shape) + 1 or tuple(tensor.shape[1:]) != shape:
                raise ValueError(
                    f"latent {name} has shape {tuple(tensor.shape)}, this model expects (B, {', '.join(map(str, shape))})"
                )
