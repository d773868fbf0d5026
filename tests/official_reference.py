"""An independent, functional re-statement of the official VidTwin forward pass, for parity tests.

The official model is `VidAutoEncoderQformerCompactSymVidVAE` (GitHub microsoft/VidTok, folder
vidtwin/). This module recomputes its eval-mode function straight from an official-format
state_dict (official key names) and official-format `model.params`, with nothing but raw tensors
and `torch.nn.functional`: explicit softmax attention with an explicit causal mask, a hand-written
BLIP-2 Q-Former, loops and reshapes. It deliberately shares no code with `vidtwin.models`, so a
bug in one is unlikely to hide in the other.

Semantics follow the official code as run by the reference fixtures (tests/data/README.md):
float32 everywhere, temporal attention causal iff `temporal_casual` (the flash-attn semantics),
spatial attention never causal, posterior means instead of samples, dropout off.

Layouts (official): video (B, 3, T, H, W) in [-1, 1]; tokens z (B, C, t, h, w); structure latent
(B, Q, h_S, w_S, d_S); dynamics latents (B, d_D, t, w_D) and (B, d_D, t, h_D).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

# Defaults of the official constructors, used when an official YAML leaves a setting out.
ENCODER_DEFAULTS = dict(input_size=(1, 32, 32), in_channels=3, patch_size=(1, 2, 2), hidden_size=64, depth=12,
                        num_heads=8, mlp_ratio=4.0, temporal_casual=True)
DECODER_DEFAULTS = dict(ENCODER_DEFAULTS, hidden_size=1152, num_heads=16)
QFORMER_DEFAULTS = dict(num_query_tokens=3, query_hidden_size=64, encoder_hidden_size=768, num_hidden_layers=6,
                        intermediate_size=768, num_attention_heads=8)
AUTOENCODER_DEFAULTS = dict(init_ch=128, cont_num_blocks=2, motion_num_blocks=2, expect_ch=4, d_dim=16,
                            downsample_motion=False)
QFORMER_LAYER_NORM_EPS = 1e-12  # BLIP-2 Q-Former config default
QFORMER_CROSS_ATTENTION_FREQUENCY = 2  # cross-attention in layers 0, 2, 4, ...
BLOCK_LAYER_NORM_EPS = 1e-6  # the transformer blocks' affine-free LayerNorms
LOGVAR_RANGE = (-30.0, 20.0)


# ----------------------------------------------------------------------------- settings
def _section(params: dict, name: str, defaults: dict) -> dict:
    given = (params.get(name) or {}).get("params") or {}
    return {key: given.get(key, value) for key, value in defaults.items()}


def read_settings(params: dict) -> dict:
    """The settings of an official `model.params` mapping, official defaults filled in."""
    settings = {key: params.get(key, value) for key, value in AUTOENCODER_DEFAULTS.items()}
    settings["encoder"] = _section(params, "encoder_config", ENCODER_DEFAULTS)
    settings["decoder"] = _section(params, "decoder_config", DECODER_DEFAULTS)
    settings["qformer"] = _section(params, "temporal_qformer_config", QFORMER_DEFAULTS)
    for part in ("encoder", "decoder"):
        settings[part]["input_size"] = tuple(int(v) for v in settings[part]["input_size"])
        settings[part]["patch_size"] = tuple(int(v) for v in settings[part]["patch_size"])
    # Like the official STTransformer: the token grid uses floor division (inputs are whole patches).
    settings["grid"] = tuple(n // p for n, p in zip(settings["encoder"]["input_size"], settings["encoder"]["patch_size"]))
    return settings


# ----------------------------------------------------------------------------- sin-cos position tables
def _sincos_1d(width: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, width): sines of all frequencies, then cosines (float64)."""
    frequencies = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
    angles = positions.reshape(-1).astype(np.float64)[:, None] * frequencies[None, :]  # (M, width/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, width)


def official_spatial_pos_embed(hidden: int, grid_h: int, grid_w: int) -> Tensor:
    """(1, h*w, hidden) float64, row-major over (h, w): first half encodes the column, second the row."""
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float32), np.arange(grid_w, dtype=np.float32), indexing="ij")
    table = np.concatenate([_sincos_1d(hidden // 2, cols), _sincos_1d(hidden // 2, rows)], axis=1)  # (h*w, hidden)
    return torch.from_numpy(table)[None]  # (1, h*w, hidden)


def official_temporal_pos_embed(hidden: int, frames: int) -> Tensor:
    """(1, t, hidden) float64."""
    return torch.from_numpy(_sincos_1d(hidden, np.arange(frames)))[None]  # (1, t, hidden)


def official_buffers(params: dict) -> StateDict:
    """The fixed sin-cos buffers the official encoder and decoder register (official names)."""
    settings = read_settings(params)
    t, h, w = settings["grid"]
    buffers = {}
    for part in ("encoder", "decoder"):
        hidden = settings[part]["hidden_size"]
        buffers[f"{part}.pos_embed"] = official_spatial_pos_embed(hidden, h, w)
        buffers[f"{part}.pos_embed_temporal"] = official_temporal_pos_embed(hidden, t)
    return buffers


# ----------------------------------------------------------------------------- expected parameter shapes
def official_parameter_shapes(params: dict) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor the official model's forward pass reads (no pos buffers, no
    never-used encoder.final_layer / decoder.x_embedder, no loss.*)."""
    s = read_settings(params)
    shapes: Dict[str, Tuple[int, ...]] = {}

    def linear(name, fan_in, fan_out):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (fan_out, fan_in), (fan_out,)

    def conv(name, fan_in, fan_out, kernel):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (fan_out, fan_in, *kernel), (fan_out,)

    for part in ("encoder", "decoder"):
        p = s[part]
        c = p["hidden_size"]
        for i in range(p["depth"]):
            block = f"{part}.blocks.{i}"
            shapes[f"{block}.scale_shift_table"] = (6, c)
            for attention in ("attn", "attn_temp"):
                linear(f"{block}.{attention}.qkv", c, 3 * c)
                linear(f"{block}.{attention}.proj", c, c)
            linear(f"{block}.mlp.fc1", c, int(c * p["mlp_ratio"]))
            linear(f"{block}.mlp.fc2", int(c * p["mlp_ratio"]), c)
    e, d = s["encoder"], s["decoder"]
    conv("encoder.x_embedder.proj", e["in_channels"], e["hidden_size"], e["patch_size"])
    shapes["decoder.final_layer.scale_shift_table"] = (2, d["hidden_size"])
    linear("decoder.final_layer.linear", d["hidden_size"], int(np.prod(d["patch_size"])) * d["in_channels"])

    q = s["qformer"]
    width, hidden = q["query_hidden_size"], e["hidden_size"]
    shapes["temporal_qformer.query_embeds"] = (q["num_query_tokens"], width)
    shapes["temporal_qformer.qformer.layernorm.weight"] = shapes["temporal_qformer.qformer.layernorm.bias"] = (width,)
    for i in range(q["num_hidden_layers"]):
        layer = f"temporal_qformer.qformer.encoder.layer.{i}"
        kinds = ["attention"] + (["crossattention"] if i % QFORMER_CROSS_ATTENTION_FREQUENCY == 0 else [])
        for kind in kinds:
            context = q["encoder_hidden_size"] if kind == "crossattention" else width
            linear(f"{layer}.{kind}.attention.query", width, width)
            linear(f"{layer}.{kind}.attention.key", context, width)
            linear(f"{layer}.{kind}.attention.value", context, width)
            linear(f"{layer}.{kind}.output.dense", width, width)
            shapes[f"{layer}.{kind}.output.LayerNorm.weight"] = shapes[f"{layer}.{kind}.output.LayerNorm.bias"] = (width,)
        linear(f"{layer}.intermediate_query.dense", width, q["intermediate_size"])
        linear(f"{layer}.output_query.dense", q["intermediate_size"], width)
        shapes[f"{layer}.output_query.LayerNorm.weight"] = shapes[f"{layer}.output_query.LayerNorm.bias"] = (width,)

    linear("cont_emb.0", width, hidden)
    conv("cont_emb.2", q["num_query_tokens"], s["grid"][0], (1,))
    channels = s["init_ch"]
    conv("conv_in", width, channels, (3, 3))
    for i in range(s["cont_num_blocks"]):
        conv(f"content_downsample_blocks.{2 * i}", channels, 2 * channels, (3, 3))
        channels *= 2
    conv("bottle_down", channels, 2 * s["expect_ch"], (3, 3))
    conv("bottle_up.0", s["expect_ch"], channels, (3, 3))
    for i in range(s["cont_num_blocks"]):
        conv(f"content_upsample_blocks.{3 * i}", channels, channels // 2, (3, 3))
        channels //= 2
    conv("conv_out", s["init_ch"], width, (3, 3))
    linear("motion_emb.0", s["d_dim"], hidden)
    linear("motion_emb.2", hidden, hidden)
    conv("motion_head", hidden, 2 * s["d_dim"], (3, 3))
    if s["downsample_motion"]:
        length = s["grid"][1]
        for i in range(s["motion_num_blocks"]):
            conv(f"downsample_motion_module.{2 * i}", hidden, hidden, (3, 3))
            length = (length + 1) // 2
        linear("up_motion.0", length, s["grid"][1])
        linear("up_motion.2", s["grid"][1], s["grid"][1])
    return shapes


# ----------------------------------------------------------------------------- small pieces
def _dense(x: Tensor, sd: StateDict, name: str) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _conv2d(x: Tensor, sd: StateDict, name: str, stride: int = 1) -> Tensor:
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], stride=stride, padding=1)


def _normalize(x: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last axis without affine parameters, written out."""
    centred = x - x.mean(dim=-1, keepdim=True)
    variance = (centred * centred).mean(dim=-1, keepdim=True)
    return centred / torch.sqrt(variance + eps)


def _affine_norm(x: Tensor, sd: StateDict, name: str, eps: float) -> Tensor:
    return _normalize(x, eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _relu(x: Tensor) -> Tensor:
    return torch.clamp(x, min=0.0)


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int, causal: bool) -> Tensor:
    """Multi-head softmax attention. q (N, Lq, D), k and v (N, Lk, D) -> (N, Lq, D)."""
    n, lq, width = q.shape
    lk = k.shape[1]
    head = width // heads
    q = q.reshape(n, lq, heads, head).permute(0, 2, 1, 3)  # (N, heads, Lq, head)
    k = k.reshape(n, lk, heads, head).permute(0, 2, 3, 1)  # (N, heads, head, Lk)
    v = v.reshape(n, lk, heads, head).permute(0, 2, 1, 3)  # (N, heads, Lk, head)
    scores = torch.matmul(q, k) / math.sqrt(head)  # (N, heads, Lq, Lk)
    if causal:
        future = torch.arange(lk)[None, :] > torch.arange(lq)[:, None]  # (Lq, Lk): key after query
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(weights, v)  # (N, heads, Lq, head)
    return out.permute(0, 2, 1, 3).reshape(n, lq, width)  # (N, Lq, D)


# ----------------------------------------------------------------------------- spatio-temporal transformer
def _block_self_attention(x: Tensor, sd: StateDict, name: str, heads: int, causal: bool) -> Tensor:
    """timm-style fused qkv attention over axis 1 of x (N, L, C)."""
    width = x.shape[-1]
    qkv = _dense(x, sd, f"{name}.qkv")  # (N, L, 3C): all heads of q, then k, then v
    q, k, v = qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
    return _dense(_attend(q, k, v, heads, causal), sd, f"{name}.proj")


def _st_block(x: Tensor, sd: StateDict, name: str, heads: int, causal: bool, temporal_pos: Optional[Tensor]) -> Tensor:
    """One official STBlock on x (B, t, S, C)."""
    b, t, s, c = x.shape
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = sd[f"{name}.scale_shift_table"].unbind(0)  # 6 x (C,)

    modulated = _normalize(x, BLOCK_LAYER_NORM_EPS) * (1 + scale_a) + shift_a
    per_frame = modulated.reshape(b * t, s, c)  # (B*t, S, C)
    spatial = _block_self_attention(per_frame, sd, f"{name}.attn", heads, causal=False)
    x = x + gate_a * spatial.reshape(b, t, s, c)

    # The temporal branch reads the un-normalised stream and reuses the attention gate.
    per_position = x.permute(0, 2, 1, 3).reshape(b * s, t, c)  # (B*S, t, C)
    if temporal_pos is not None:
        per_position = per_position + temporal_pos
    temporal = _block_self_attention(per_position, sd, f"{name}.attn_temp", heads, causal=causal)
    x = x + gate_a * temporal.reshape(b, s, t, c).permute(0, 2, 1, 3)  # back to (B, t, S, C)

    hidden = _normalize(x, BLOCK_LAYER_NORM_EPS) * (1 + scale_m) + shift_m
    hidden = _dense(_gelu_tanh(_dense(hidden, sd, f"{name}.mlp.fc1")), sd, f"{name}.mlp.fc2")
    return x + gate_m * hidden


def _transformer(x: Tensor, sd: StateDict, part: str, settings: dict) -> Tensor:
    """Position tables + every block of the encoder or decoder, x (B, t, S, C) -> (B, t, S, C)."""
    p = settings[part]
    spatial_pos = sd[f"{part}.pos_embed"].to(x.dtype)  # (1, S, C)
    temporal_pos = sd[f"{part}.pos_embed_temporal"].to(x.dtype)  # (1, t, C)
    x = x + spatial_pos[:, None]
    for i in range(p["depth"]):
        x = _st_block(x, sd, f"{part}.blocks.{i}", p["num_heads"], bool(p["temporal_casual"]),
                      temporal_pos if i == 0 else None)
    return x


def _encoder(video: Tensor, sd: StateDict, settings: dict) -> Tensor:
    """(B, 3, T, H, W) -> tokens (B, C, t, h, w)."""
    pt, ph, pw = settings["encoder"]["patch_size"]
    t_in, h_in, w_in = video.shape[2:]
    padding = (0, -w_in % pw, 0, -h_in % ph, 0, -t_in % pt)  # pad the end of W, H, T to whole patches
    video = F.pad(video, padding)
    patches = F.conv3d(video, sd["encoder.x_embedder.proj.weight"], sd["encoder.x_embedder.proj.bias"],
                       stride=(pt, ph, pw))  # (B, C, t, h, w)
    b, c, t, h, w = patches.shape
    tokens = patches.permute(0, 2, 3, 4, 1).reshape(b, t, h * w, c)  # (B, t, S, C)
    tokens = _transformer(tokens, sd, "encoder", settings)
    return tokens.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # (B, C, t, h, w)


def _decoder(embeddings: Tensor, sd: StateDict, settings: dict) -> Tensor:
    """(B, C, t, h, w) -> video (B, 3, T, H, W)."""
    b, c, t, h, w = embeddings.shape
    p = settings["decoder"]
    pt, ph, pw = p["patch_size"]
    out_ch = p["in_channels"]
    tokens = embeddings.permute(0, 2, 3, 4, 1).reshape(b, t, h * w, c)  # (B, t, S, C)
    tokens = _transformer(tokens, sd, "decoder", settings)
    shift, scale = sd["decoder.final_layer.scale_shift_table"].unbind(0)
    pixels = _dense(_normalize(tokens, BLOCK_LAYER_NORM_EPS) * (1 + scale) + shift, sd, "decoder.final_layer.linear")
    pixels = pixels.reshape(b, t, h, w, pt, ph, pw, out_ch)  # last axis of the linear is (pt, ph, pw, 3)
    pixels = pixels.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, 3, t, pt, h, ph, w, pw)
    return pixels.reshape(b, out_ch, t * pt, h * ph, w * pw)


# ----------------------------------------------------------------------------- Q-Former (BLIP-2)
def _qformer_attention(hidden: Tensor, context: Tensor, sd: StateDict, name: str, heads: int) -> Tensor:
    """BERT attention sub-layer: attend from `hidden` to `context`, project, add, LayerNorm."""
    q = _dense(hidden, sd, f"{name}.attention.query")
    k = _dense(context, sd, f"{name}.attention.key")
    v = _dense(context, sd, f"{name}.attention.value")
    mixed = _dense(_attend(q, k, v, heads, causal=False), sd, f"{name}.output.dense")
    return _affine_norm(mixed + hidden, sd, f"{name}.output.LayerNorm", QFORMER_LAYER_NORM_EPS)


def _qformer(sequences: Tensor, sd: StateDict, settings: dict) -> Tensor:
    """Learned queries read each sequence. sequences (N, t, C) -> (N, Q, q)."""
    q = settings["qformer"]
    prefix = "temporal_qformer"
    queries = _affine_norm(sd[f"{prefix}.query_embeds"], sd, f"{prefix}.qformer.layernorm", QFORMER_LAYER_NORM_EPS)
    hidden = queries[None].expand(sequences.shape[0], -1, -1)  # (N, Q, q)
    for i in range(q["num_hidden_layers"]):
        layer = f"{prefix}.qformer.encoder.layer.{i}"
        hidden = _qformer_attention(hidden, hidden, sd, f"{layer}.attention", q["num_attention_heads"])
        if i % QFORMER_CROSS_ATTENTION_FREQUENCY == 0:
            hidden = _qformer_attention(hidden, sequences, sd, f"{layer}.crossattention", q["num_attention_heads"])
        expanded = _gelu_erf(_dense(hidden, sd, f"{layer}.intermediate_query.dense"))
        hidden = _affine_norm(_dense(expanded, sd, f"{layer}.output_query.dense") + hidden, sd,
                              f"{layer}.output_query.LayerNorm", QFORMER_LAYER_NORM_EPS)
    return hidden


# ----------------------------------------------------------------------------- Gaussian posteriors
def _posterior(moments: Tensor, axis: int) -> Tuple[Tensor, Tensor]:
    """Split moments into (mean, KL summed over all elements) along `axis`."""
    mean, logvar = moments.chunk(2, dim=axis)
    logvar = logvar.clamp(*LOGVAR_RANGE)
    kl = 0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar).sum()
    return mean, kl


# ----------------------------------------------------------------------------- the model
class OfficialReference:
    """The official eval-mode function over an official-format state_dict.

    state_dict: official key names (extra keys such as loss.* are ignored); the sin-cos buffers are
    computed the official way when missing. params: the official `model.params` mapping.
    """

    def __init__(self, state_dict: StateDict, params: dict) -> None:
        self.settings = read_settings(params)
        sd = {k: v.detach().float() for k, v in state_dict.items() if not k.startswith("loss.")}
        for name, value in official_buffers(params).items():
            sd.setdefault(name, value)
        self.sd = sd

    @torch.no_grad()
    def encode(self, video: Tensor) -> Dict[str, Tensor]:
        """video (B, 3, T, H, W) -> z, structure (B, Q, h_S, w_S, d_S), dynamics_x, dynamics_y, kl."""
        sd, s = self.sd, self.settings
        z = _encoder(video, sd, s)
        b, c, t, h, w = z.shape

        # Structure: a Q-Former per spatial position over time, then a conv bottleneck per query map.
        sequences = z.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # (B*h*w, t, C)
        queries = _qformer(sequences, sd, s)
        n_queries, width = queries.shape[1:]
        maps = queries.reshape(b, h, w, n_queries, width).permute(0, 3, 4, 1, 2)  # (B, Q, q, h, w)
        maps = _conv2d(maps.reshape(b * n_queries, width, h, w), sd, "conv_in")
        for i in range(s["cont_num_blocks"]):
            maps = _relu(_conv2d(maps, sd, f"content_downsample_blocks.{2 * i}", stride=2))
        moments = _conv2d(maps, sd, "bottle_down")  # (B*Q, 2*d_S, h_S, w_S)
        moments = moments.reshape(b, n_queries, *moments.shape[1:])  # (B, Q, 2*d_S, h_S, w_S)
        structure, kl_structure = _posterior(moments, axis=2)
        structure = structure.permute(0, 1, 3, 4, 2)  # (B, Q, h_S, w_S, d_S)

        # Dynamics: optional per-frame stride-2 convs, average over one spatial axis, shared conv head.
        grid = z
        if s["downsample_motion"]:
            frames = z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*t, C, h, w)
            for i in range(s["motion_num_blocks"]):
                frames = _relu(_conv2d(frames, sd, f"downsample_motion_module.{2 * i}", stride=2))
            grid = frames.reshape(b, t, c, *frames.shape[2:]).permute(0, 2, 1, 3, 4)  # (B, C, t, h', w')
        profiles_x = grid.sum(dim=3) / grid.shape[3]  # (B, C, t, w'): averaged over the height
        profiles_y = grid.sum(dim=4) / grid.shape[4]  # (B, C, t, h'): averaged over the width
        dynamics_x, kl_x = _posterior(_conv2d(profiles_x, sd, "motion_head"), axis=1)
        dynamics_y, kl_y = _posterior(_conv2d(profiles_y, sd, "motion_head"), axis=1)
        kl = (kl_structure + kl_x + kl_y) / b
        return {"z": z, "structure": structure, "dynamics_x": dynamics_x, "dynamics_y": dynamics_y, "kl": kl}

    @torch.no_grad()
    def decode(self, structure: Tensor, dynamics_x: Tensor, dynamics_y: Tensor, only_part: Optional[str] = None) -> Tensor:
        """Latents (official layouts) -> video (B, 3, T, H, W). only_part: None, 'content' or 'motion'."""
        sd, s = self.sd, self.settings
        t, h, w = s["grid"]
        b, n_queries = structure.shape[:2]

        maps = structure.permute(0, 1, 4, 2, 3).reshape(b * n_queries, structure.shape[4], *structure.shape[2:4])
        maps = _relu(_conv2d(maps, sd, "bottle_up.0"))  # (B*Q, channels, h_S, w_S)
        for i in range(s["cont_num_blocks"]):
            maps = _relu(_conv2d(maps, sd, f"content_upsample_blocks.{3 * i}"))
            maps = maps.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest-neighbour x2
        maps = _conv2d(maps, sd, "conv_out")  # (B*Q, q, h_up, w_up)
        h_up = maps.shape[2]
        if h_up > h:
            # The official crop: one border, computed from the height, for both axes.
            border = (h_up - h) // 2
            maps = maps[:, :, border:border + h, border:border + w]
        if tuple(maps.shape[2:]) != (h, w):
            raise ValueError(f"the official decoder cannot fit a {tuple(maps.shape[2:])} structure map to the {h}x{w} grid")
        width = maps.shape[1]
        sequences = maps.reshape(b, n_queries, width, h * w).permute(0, 3, 1, 2).reshape(b * h * w, n_queries, width)
        hidden = _relu(_dense(sequences, sd, "cont_emb.0"))  # (B*h*w, Q, C)
        mix = sd["cont_emb.2.weight"][:, :, 0]  # (t, Q): a 1x1 Conv1d over the query axis
        frames = _relu(torch.einsum("tq,nqc->ntc", mix, hidden) + sd["cont_emb.2.bias"][None, :, None])  # (B*h*w, t, C)
        structure_part = frames.reshape(b, h, w, t, -1).permute(0, 4, 3, 1, 2)  # (B, C, t, h, w)

        def embed(dynamics: Tensor) -> Tensor:  # (B, d, t, n) -> (B, C, t, grid length)
            hidden = _relu(_dense(_relu(_dense(dynamics.permute(0, 2, 3, 1), sd, "motion_emb.0")), sd, "motion_emb.2"))
            hidden = hidden.permute(0, 3, 1, 2)  # (B, C, t, n)
            if s["downsample_motion"]:
                hidden = _relu(_dense(_relu(_dense(hidden, sd, "up_motion.0")), sd, "up_motion.2"))
            return hidden

        columns = embed(dynamics_x)[:, :, :, None, :].expand(-1, -1, -1, h, -1)  # (B, C, t, h, w)
        rows = embed(dynamics_y)[:, :, :, :, None].expand(-1, -1, -1, -1, w)  # (B, C, t, h, w)
        if only_part == "content":
            embeddings = structure_part
        elif only_part == "motion":
            embeddings = columns + rows
        else:
            embeddings = structure_part + columns + rows
        return _decoder(embeddings, sd, s)

    @torch.no_grad()
    def run_all(self, x: Tensor, x2: Tensor) -> Dict[str, Tensor]:
        """Every tensor the reference fixtures record, under the fixture names (see tests/data/README.md)."""
        first, second = self.encode(x), self.encode(x2)
        parts = (first["structure"], first["dynamics_x"], first["dynamics_y"])
        return {
            "z": first["z"],
            "z_structure": first["structure"],
            "z_dynamics_x": first["dynamics_x"],
            "z_dynamics_y": first["dynamics_y"],
            "dec": self.decode(*parts),
            "dec_structure_only": self.decode(*parts, only_part="content"),
            "dec_dynamics_only": self.decode(*parts, only_part="motion"),
            "dec_cross": self.decode(first["structure"], second["dynamics_x"], second["dynamics_y"]),
            "kl_loss": first["kl"].reshape(1),
        }
