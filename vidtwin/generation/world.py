"""An action-conditioned world model over the FSQ tokens of consecutive clips.

    from vidtwin.generation.world import WorldModel, WorldModelConfig

    model = WorldModel(WorldModelConfig.from_preset("tiny", token_shapes=autoencoder.config.token_shapes(),
                                                    structure_levels=[5, 5, 5], dynamics_levels=[5, 5, 5]))
    loss = model.training_loss(batch, generator=random)         # windows of K + 1 clips (LatentDataModule)
    clips = model.rollout(start, actions=[[2, 2, 3]], seed=0)    # three predicted clips of tokens

**Sequence.** Each clip's tokens are packed by :class:`~vidtwin.generation.packing.LatentPacking`
(FSQ tokens as a channel of 1, patch 1): the structure tokens in (query, row, column) order, then
the joined dynamics image (``dynamics_x`` then ``dynamics_y`` along the pooled axis). A clip
becomes ``1 + N`` positions: a separator, then its ``N = N_S + N_D`` tokens. A window of ``n``
clips is ``n * (1 + N)`` positions. Each token is embedded by its group's table (structure or
dynamics codes, plus one ``[MASK]`` row each; a table per FSQ level with ``factorized_codes``),
and gets its group's fixed sin-cos position embedding over the group's grid, a learned type
embedding per group, and a learned embedding of its clip's index in the window.

**Actions.** One action per clip, from ``config.actions`` (single letters, e.g. ``D L R U``): the
action of clip k is the motion *during* clip k, so it is added to the separator at the start of
clip k, through a zero-initialized embedding (an untrained model ignores actions, as iVideoGPT
does). The first clip of a window carries the "no action" row: its motion is already in its
tokens, and at play time the start clip's action is unknown. Training and rollouts both follow
this rule, so the model never sees a state it was not trained on.

**Objective: MaskGIT.** Attention is block-causal across clips (a position sees its own clip and
the clips before it) and bidirectional within a clip. Training masks a share ``cos(pi/2 * u)``,
``u ~ U(0, 1)``, of the last clip's tokens and scores the masked ones alone (cross-entropy); the
context clips and the unmasked tokens get no loss. Each batch uses a random context length from
1 to K, so the model also predicts the first clips of a rollout, whose context is shorter. With
``context_noise`` > 0, each window also replaces a share ``~ U(0, context_noise)`` of its context
tokens by random codes: a rollout's context is its own imperfect predictions, and a model trained
on clean context alone lets its errors compound from clip to clip.
Sampling fills a clip in ``decoding_steps`` forward passes (8 by default): at each step every
masked token is drawn (temperature, top-k), and the most confident ones are kept, as many as the
cosine schedule says. Why MaskGIT rather than next-token prediction: a clip of the demo has a few
hundred tokens, so an autoregressive rollout would cost that many forward passes per clip on a
CPU, while MaskGIT costs a fixed handful; and the bidirectional context within the clip suits
tokens that form 2D grids (structure) and motion curves (dynamics) rather than a text-like order.

**Vocabulary.** By default one softmax over all ``prod(levels)`` codes per group, each code with
its own embedding row. ``factorized_codes: true`` splits each code into its FSQ levels (levels
``[8, 5, 5, 5]``: 4 digits): the embedding is the sum of one learned row per level, the head has
one softmax per level (8 + 5 + 5 + 5 logits instead of 1,000), a drawn code's confidence is the sum
of its levels' log-probabilities, and top-k applies per level. That is what a codebook of tens of
thousands of codes needs (the published FSQ has 64,000: a joint head would be hidden x 64,000 per
group, and its logits per token as many). On the demo's 1,000-code codebooks the joint softmax
stays: after 1,500 updates the factorized model's loss was higher, and neither kept the digit
above chance (docs/benchmarks.md, "Moving Digits world model").

**Conditioning.** The blocks are adaLN-Zero blocks (:class:`~vidtwin.generation.transformer.ModulatedBlock`,
as in the generator); their condition vector is a
learned constant, since the actions are per clip and enter as tokens. The constant keeps the
adaLN-Zero start (every block the identity) and gives each block a learned norm scale and gate.

**Start clip.** With ``start_window`` = W (0 is off), the rollout's start clip stays in the
context of every step, in front of the last K clips, once it has left them: a rollout's own
predictions drift from step to step, and the start clip is the one real view of the scene (in the
game, of the digit) that the model keeps. It gets its own row of the clip embedding and "no
action". Training windows are W clips from a start clip (``sequence_length: W``); each batch
predicts clip ``j``, drawn from 1 to W - 1, from clips ``max(0, j - K) .. j - 1``, with clip 0 in
front when it is not among them: the context a rollout has at step ``j``.

**Memory.** :class:`Rollout` keeps the last K clips and their actions (and the start clip, with
``start_window``), so a rollout of any length holds the same tensors; only the clips it returns
grow with the length.

Token layouts (int64, values in ``[0, prod(levels))``): ``structure`` ``(B, n, Q, h_S, w_S)``,
``dynamics_x`` ``(B, n, T, w_D)``, ``dynamics_y`` ``(B, n, T, h_D)`` for n clips; actions
``(B, n)`` int64 in ``[0, len(config.actions))``.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from ..hints import Verbatim, command
from ..pretrained import ModelFormat, PretrainedModel, render_model_card
from .config import WorldModelConfig
from .packing import LatentPacking, latent_dict, sincos_position_embedding
from .transformer import ModulatedTransformer


class WorldModelError(ValueError, UserError):
    """A request the world model cannot serve (an unknown action, tokens of the wrong shape)."""


def cosine_mask_ratio(progress: torch.Tensor) -> torch.Tensor:
    """MaskGIT's schedule: the share of a clip's tokens still masked at progress in [0, 1]."""
    return torch.cos(math.pi / 2 * progress)


def level_digits(codes: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """FSQ code indices ``(...)`` -> their digit per level ``(..., len(levels))``.

    The index is mixed-radix with the first level least significant, the order of the FSQ
    regularizer (vector-quantize-pytorch): ``index = d_0 + L_0 * (d_1 + L_1 * (d_2 + ...))``.
    """
    digits, rest = [], codes
    for size in levels:
        digits.append(rest % size)
        rest = torch.div(rest, size, rounding_mode="floor")
    return torch.stack(digits, dim=-1)


def digits_to_codes(digits: Sequence[torch.Tensor], levels: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`level_digits`: one ``(...)`` digit tensor per level -> code indices ``(...)``."""
    codes, basis = torch.zeros_like(digits[0]), 1
    for digit, size in zip(digits, levels):
        codes = codes + digit * basis
        basis *= size
    return codes


# config.json of a save_pretrained folder: {"format": "vidtwin-world-model", "format_version": 1,
# "world_model": WorldModelConfig dict (the action vocabulary included), "autoencoder": the record of
# vidtwin.pretrained.autoencoder_record (its files, and the weights fingerprint of the training data)},
# so that `vidtwin play` needs nothing else; a `vidtwin train` checkpoint holds the same under
# "vidtwin_world_model", the weights under "world." and the EMA weights under "ema_state_dict".
WORLD_FORMAT = ModelFormat(
    name="vidtwin-world-model", version=1, kind="world model", config_key="world_model", config_class=WorldModelConfig,
    state_prefix="world.", checkpoint_key="vidtwin_world_model", records_autoencoder=True,
    other_hint="is it a generator's or an autoencoder's? Give a world model's run folder, checkpoint or saved folder",
    upload_message="Upload VidTwin world model",
)
WORLD_CHECKPOINT_KEY = WORLD_FORMAT.checkpoint_key

MODEL_CARD = """---
{{ card_data }}
---

# VidTwin world model

An action-conditioned MaskGIT transformer over the FSQ tokens of a
[VidTwin](https://arxiv.org/abs/2412.17726) video autoencoder ({{ depth }} blocks, width {{ hidden }},
{{ tokens }} tokens per clip, {{ context }} clips of context, actions {{ actions }}). Decode its
clips with the autoencoder it was trained on.

```python
from vidtwin.generation import WorldModel

world = WorldModel.from_pretrained("{{ repo_id }}")
clips = world.rollout(start_tokens, actions=[[0, 1, 1]], seed=0)   # one predicted clip per action
```

or from the command line (decoded by the autoencoder its `config.json` names): `PLAY_COMMAND`.

## Config

```json
{{ config_json }}
```
""".replace("PLAY_COMMAND", command("play", Verbatim("hf://{{ repo_id }}"), "--start", Verbatim("START.mp4"),
                                    "--actions", Verbatim("{{ example_actions }}"), "--output", "rollout.mp4"))
CARD_TAGS = ["video", "vidtwin", "world-model", "maskgit"]


class WorldModel(PretrainedModel, nn.Module):
    """MaskGIT transformer over windows of FSQ-token clips with one action per clip (see the module
    docstring). ``from_pretrained`` loads a ``save_pretrained`` folder, a `vidtwin train` run folder or
    checkpoint (EMA weights when stored) or a Hub repo (see :mod:`vidtwin.pretrained`)."""

    pretrained_format = WORLD_FORMAT

    def __init__(self, config: Optional[WorldModelConfig] = None):
        super().__init__()
        self.config = config = config or WorldModelConfig()
        shapes = config.token_shapes
        # FSQ tokens as a channel of 1 and patch 1: packing only orders them (structure, then dynamics).
        self.packing = LatentPacking({name: [1, *shape] for name, shape in shapes.items()}, [1, 1, 1], [1, 1])
        group_levels = [config.structure_levels, config.dynamics_levels]
        self.codebook_sizes = [math.prod(levels) for levels in group_levels]
        # The sub-vocabularies of each group: one per FSQ level, or the whole codebook as one.
        self.group_factors = [list(levels) if config.factorized_codes else [math.prod(levels)] for levels in group_levels]
        self.group_tokens = [group.num_tokens for group in self.packing.groups]
        hidden = config.hidden_size
        # A table per sub-vocabulary; its last row (index = its size) is [MASK].
        self.token_embeddings = nn.ModuleList(nn.ModuleList(nn.Embedding(size + 1, hidden) for size in factors)
                                              for factors in self.group_factors)
        self.type_embedding = nn.Parameter(torch.zeros(len(self.codebook_sizes), hidden))
        self.separator = nn.Parameter(torch.zeros(hidden))
        # Rows 0..K: a clip's place among the last K + 1; row K + 1 the kept start clip (start_window).
        self.clip_embedding = nn.Embedding(config.context_clips + 1 + bool(config.start_window), hidden)
        # Row len(actions) is "no action" (the first clip of a window).
        self.action_embedding = nn.Embedding(len(config.actions) + 1, hidden)
        self.condition = nn.Parameter(torch.zeros(hidden))
        self.transformer = ModulatedTransformer(hidden, config.depth, config.num_heads, config.mlp_ratio)
        # One head per group: the logits of its sub-vocabularies side by side.
        self.heads = nn.ModuleList(nn.Linear(hidden, sum(factors)) for factors in self.group_factors)
        for table in (*(table for tables in self.token_embeddings for table in tables), self.clip_embedding):
            nn.init.normal_(table.weight, std=0.02)
        for parameter in (self.type_embedding, self.separator, self.condition):
            nn.init.normal_(parameter, std=0.02)
        nn.init.zeros_(self.action_embedding.weight)
        positions = torch.cat([sincos_position_embedding(group.grid, hidden) for group in self.packing.groups])
        self.register_buffer("position_embedding", positions, persistent=False)  # (N, hidden), from the config
        group_of = torch.cat([torch.full((n,), index) for index, n in enumerate(self.group_tokens)])
        self.register_buffer("group_of_token", group_of, persistent=False)  # (N,) 0 structure, 1 dynamics
        # The autoencoder the tokens came from (vidtwin.pretrained.autoencoder_record: its files, the weights
        # fingerprint of the training data); training writes it, the files record it, `play` checks against it.
        self.autoencoder_files: Optional[dict] = None
        self.loaded_from = None  # the file or folder from_pretrained read: where relative recorded paths are looked for
        # Any load_state_dict of an older release's names (`vidtwin train --resume` renames them earlier, in
        # WorldLightningModule.upgrade_checkpoint, so that --resume's key check sees the new names).
        self._register_load_state_dict_pre_hook(lambda state, prefix, *args: self.upgrade_state_dict(state, prefix))

    def upgrade_state_dict(self, state: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """Rename, in ``state`` itself, the names of models saved before ``factorized_codes`` existed:
        their one table per group, ``token_embeddings.<group>.weight``, is sub-vocabulary 0 of that
        group now. Returns ``state``."""
        for group in range(len(self.group_factors)):
            old, new = f"{prefix}token_embeddings.{group}.weight", f"{prefix}token_embeddings.{group}.0.weight"
            if old in state and new not in state:
                state[new] = state.pop(old)
        return state

    def model_card(self, repo_id: str = "OWNER/NAME", **fields) -> str:
        """The model card (``README.md``): size, tokens, actions, how to load, the config."""
        actions = self.config.actions
        values = dict(depth=self.config.depth, hidden=self.config.hidden_size, tokens=self.tokens_per_clip,
                      context=self.config.context_clips, actions=" ".join(actions),
                      example_actions="".join(actions[:3]) if all(len(a) == 1 for a in actions) else actions[0],
                      config_json=json.dumps(self.config.to_dict(), indent=2), repo_id=repo_id)
        return render_model_card(MODEL_CARD, CARD_TAGS, values, fields)

    # ------------------------------------------------------------------------ tokens and actions
    @property
    def tokens_per_clip(self) -> int:
        return sum(self.group_tokens)

    @property
    def no_action(self) -> int:
        return len(self.config.actions)

    def action_indices(self, letters: str) -> List[int]:
        """Action letters (``"RRUULD"``) -> indices into ``config.actions``; an unknown letter is an error."""
        unknown = sorted({letter for letter in letters if letter not in self.config.actions})
        if unknown:
            raise WorldModelError(f"unknown action(s) {', '.join(map(repr, unknown))}; this model knows "
                                  f"{''.join(self.config.actions)} (one letter per clip)")
        return [self.config.actions.index(letter) for letter in letters]

    def pack_clips(self, tokens) -> torch.Tensor:
        """Token clips (a mapping or ``VidTwinTokens`` of ``(B, n, ...)``) -> ``(B, n, N)`` int64."""
        tokens = latent_dict(tokens)
        batch, clips = tokens["structure"].shape[:2]
        for name, shape in self.config.token_shapes.items():
            if tuple(tokens[name].shape[2:]) != tuple(shape) or tokens[name].shape[:2] != (batch, clips):
                raise WorldModelError(f"{name} tokens have shape {tuple(tokens[name].shape)}, expected "
                                      f"({batch}, {clips}, {', '.join(map(str, shape))}): the autoencoder differs "
                                      "from the one this world model was trained with")
        flat = {name: value.reshape(batch * clips, 1, *value.shape[2:]) for name, value in tokens.items()}  # (B*n, 1, ...)
        packed = torch.cat(self.packing.pack(flat), dim=1)  # (B*n, N, 1)
        return packed.reshape(batch, clips, self.tokens_per_clip).long()  # (B, n, N)

    def unpack_clips(self, packed: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``(B, n, N)`` -> ``{"structure": (B, n, Q, h_S, w_S), "dynamics_x": (B, n, T, w_D), "dynamics_y": (B, n, T, h_D)}``."""
        batch, clips = packed.shape[:2]
        groups = self.packing.split(packed.reshape(batch * clips, self.tokens_per_clip, 1))  # [(B*n, N_g, 1)]
        tokens = self.packing.unpack(groups)  # each (B*n, 1, ...)
        return {name: value.reshape(batch, clips, *value.shape[2:]) for name, value in tokens.items()}

    # ------------------------------------------------------------------------ the network
    def block_causal_mask(self, clips: int, device=None) -> torch.Tensor:
        """Bool ``(L, L)``, ``L = clips * (1 + N)``: True where a query may attend (its clip and earlier ones)."""
        clip_of = torch.arange(clips, device=device).repeat_interleave(1 + self.tokens_per_clip)  # (L,)
        return clip_of[:, None] >= clip_of[None, :]

    def embed(self, packed: torch.Tensor, actions: torch.Tensor, start_clip: bool = False) -> torch.Tensor:
        """packed ``(B, n, N)`` token indices (``[MASK]`` = each group's codebook size), actions
        ``(B, n)`` (``no_action`` allowed) -> the input sequence ``(B, n * (1 + N), hidden)``.
        start_clip: clip 0 is the kept start clip, in front of the last ``n - 1`` clips."""
        batch, clips, _ = packed.shape
        parts = []
        for index, (tables, part) in enumerate(zip(self.token_embeddings, packed.split(self.group_tokens, dim=2))):
            factors = self.group_factors[index]
            masked = part == self.codebook_sizes[index]  # (B, n, N_g)
            digits = level_digits(part.masked_fill(masked, 0), factors)  # (B, n, N_g, F)
            digits = torch.where(masked[..., None], torch.tensor(factors, device=part.device), digits)  # [MASK] rows
            embedded = sum(table(digits[..., factor]) for factor, table in enumerate(tables))  # (B, n, N_g, hidden)
            parts.append(embedded + self.type_embedding[index])
        tokens = torch.cat(parts, dim=2) + self.position_embedding  # (B, n, N, hidden)
        separators = (self.separator + self.action_embedding(actions))[:, :, None]  # (B, n, 1, hidden)
        sequence = torch.cat([separators, tokens], dim=2)  # (B, n, 1 + N, hidden)
        rows = torch.arange(clips, device=packed.device)
        if start_clip:
            rows = torch.cat([rows.new_tensor([self.config.context_clips + 1]), rows[:-1]])  # (n,)
        sequence = sequence + self.clip_embedding(rows)[:, None]  # (B, n, 1 + N, hidden)
        return sequence.reshape(batch, clips * (1 + self.tokens_per_clip), -1)  # (B, L, hidden)

    def forward(self, packed: torch.Tensor, actions: torch.Tensor, last_clip_only: bool = False,
                start_clip: bool = False) -> List[torch.Tensor]:
        """Logits of every token: ``[(B, n, N_S, V_S), (B, n, N_D, V_D)]`` (``(B, 1, ...)`` with
        ``last_clip_only``), V the sum of each group's sub-vocabulary sizes (``group_factors``), the
        logits of each sub-vocabulary side by side. packed, actions and start_clip as in :meth:`embed`."""
        batch, clips, _ = packed.shape
        if start_clip and not self.config.start_window:
            raise WorldModelError("this world model keeps no start clip (its start_window is 0)")
        limit = self.config.context_clips + 1 + bool(start_clip)
        if clips > limit:
            raise WorldModelError(f"a window holds at most {limit} clips, got {clips}")
        condition = self.condition.expand(batch, -1)  # (B, hidden)
        # With last_clip_only, the last block computes the outputs of the last clip's tokens alone
        # (the context's and the separators' would be dropped): the other positions are only keys there.
        hidden = self.transformer(self.embed(packed, actions, start_clip), condition,
                                  self.block_causal_mask(clips, packed.device),
                                  queries=self.tokens_per_clip if last_clip_only else None)
        kept_clips = 1 if last_clip_only else clips
        hidden = hidden.reshape(batch, kept_clips, -1, hidden.shape[-1])  # (B, n or 1, 1 + N or N, hidden)
        hidden = hidden[:, :, -self.tokens_per_clip:]  # (B, n or 1, N, hidden): separators dropped
        return [head(part) for head, part in zip(self.heads, hidden.split(self.group_tokens, dim=2))]

    def window_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions ``(B, n)`` of a window's clips with the first replaced by "no action" (see the module docstring)."""
        actions = actions.clone()
        actions[:, 0] = self.no_action
        return actions

    # ------------------------------------------------------------------------ training
    def mask_last_clip(self, packed: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Mask a cosine-scheduled share of the last clip's tokens.

        packed ``(B, n, N)`` -> (masked input ``(B, n, N)``, bool mask ``(B, n, N)``, True where a
        token was replaced by ``[MASK]``; always False in the context clips).
        """
        batch, clips, count = packed.shape
        device = packed.device
        ratio = cosine_mask_ratio(torch.rand(batch, device=device, generator=generator))  # (B,)
        masked_count = (ratio * count).ceil().clamp(1, count)  # (B,)
        scores = torch.rand(batch, count, device=device, generator=generator)  # (B, N)
        rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N): each token's place in a random order
        last = rank < masked_count[:, None]  # (B, N)
        mask = torch.zeros_like(packed, dtype=torch.bool)
        mask[:, -1] = last
        mask_values = torch.tensor(self.codebook_sizes, device=device)[self.group_of_token]  # (N,)
        return torch.where(mask, mask_values, packed), mask

    def masked_loss(self, logits: Sequence[torch.Tensor], targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the masked tokens alone, summed over each token's sub-vocabularies (the
        negative log-likelihood of its code) and averaged over tokens. logits as :meth:`forward` returns them
        (for n clips), targets ``(B, n, N)``, mask ``(B, n, N)`` bool."""
        total = logits[0].new_zeros(())
        for factors, part_logits, part_targets, part_mask in zip(self.group_factors, logits,
                                                                 targets.split(self.group_tokens, dim=2),
                                                                 mask.split(self.group_tokens, dim=2)):
            digits = level_digits(part_targets, factors)  # (B, n, N_g, F)
            for factor, factor_logits in enumerate(part_logits.split(factors, dim=-1)):  # each (B, n, N_g, V_f)
                losses = F.cross_entropy(factor_logits.flatten(0, 2), digits[..., factor].flatten(),
                                         reduction="none")  # (B*n*N_g,)
                total = total + (losses * part_mask.flatten()).sum()
        return total / mask.sum().clamp(min=1)

    def training_loss(self, batch: Mapping, generator: Optional[torch.Generator] = None,
                      context_clips: Optional[int] = None, target_clip: Optional[int] = None) -> torch.Tensor:
        """The MaskGIT loss of a batch of windows (a scalar).

        batch: ``structure`` ``(B, W, Q, h_S, w_S)``, ``dynamics_x``, ``dynamics_y`` int64 tokens
        and ``actions`` ``(B, W)`` (``collate_latent_sequences``), W = ``config.training_window``.
        context_clips: clips of context before the predicted last one (None: drawn from 1 to K with
        ``generator``). With ``start_window``, target_clip instead: the clip predicted, from 1 to
        W - 1, its context that of a rollout's step ``target_clip`` (None: drawn).
        generator: the random source of the context length and the masks (None: torch's global one).
        """
        packed = self.pack_clips(batch)  # (B, W, N)
        actions = batch["actions"].to(packed.device).long()
        if int(actions.min()) < 0 or int(actions.max()) >= self.no_action:
            raise WorldModelError(f"actions must lie in [0, {self.no_action}), got values up to {int(actions.max())}")
        available = packed.shape[1] - 1
        if available < 1:
            raise WorldModelError("training windows need at least 2 clips (context and the predicted clip)")
        start_clip = False
        if self.config.start_window:
            packed, actions, start_clip = self.start_window_clips(packed, actions, generator, target_clip)
        else:
            if context_clips is None:
                upper = min(available, self.config.context_clips)
                context_clips = int(torch.randint(1, upper + 1, (1,), generator=generator, device=packed.device))
            packed, actions = packed[:, -context_clips - 1:], actions[:, -context_clips - 1:]  # (B, c + 1, N), (B, c + 1)
        inputs, mask = self.mask_last_clip(packed, generator)
        if self.config.context_noise > 0:
            inputs = self.corrupt_context(inputs, generator)
        # The context has no loss, so it needs no logits.
        logits = self(inputs, self.window_actions(actions), last_clip_only=True, start_clip=start_clip)
        return self.masked_loss(logits, packed[:, -1:], mask[:, -1:])

    def start_window_clips(self, packed: torch.Tensor, actions: torch.Tensor, generator: Optional[torch.Generator],
                           target_clip: Optional[int] = None):
        """The clips a rollout's step ``j`` sees, from a window whose clip 0 is the start clip.

        packed ``(B, W, N)``, actions ``(B, W)`` -> packed ``(B, c, N)``, actions ``(B, c)`` of clips
        ``[0,] max(0, j - K) .. j`` and whether clip 0 was put in front (the start clip kept).
        target_clip: ``j`` in [1, W - 1] (None: drawn with ``generator``).
        """
        last = packed.shape[1] - 1
        if target_clip is None:
            target_clip = int(torch.randint(1, last + 1, (1,), generator=generator, device=packed.device))
        if not 1 <= target_clip <= last:
            raise WorldModelError(f"target_clip must be in [1, {last}] for windows of {last + 1} clips, got {target_clip}")
        first = max(0, target_clip - self.config.context_clips)
        keep = ([0] if first > 0 else []) + list(range(first, target_clip + 1))
        return packed[:, keep], actions[:, keep], first > 0

    def corrupt_context(self, inputs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Replace a share ``~ U(0, context_noise)`` per window of the context clips' tokens by random
        codes of their group; the last clip is kept. inputs ``(B, n, N)`` -> ``(B, n, N)``."""
        batch, clips, count = inputs.shape
        device = inputs.device
        rate = torch.rand(batch, 1, 1, device=device, generator=generator) * self.config.context_noise  # (B, 1, 1)
        replaced = torch.rand(batch, clips, count, device=device, generator=generator) < rate  # (B, n, N)
        replaced[:, -1] = False
        sizes = torch.tensor(self.codebook_sizes, device=device)[self.group_of_token]  # (N,)
        codes = (torch.rand(batch, clips, count, device=device, generator=generator) * sizes).long()  # (B, n, N)
        return torch.where(replaced, codes, inputs)

    # ------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def predict_clip(self, context: torch.Tensor, context_actions: torch.Tensor, actions: torch.Tensor,
                     random: torch.Generator, steps: Optional[int] = None, temperature: float = 1.0,
                     top_k: Optional[int] = None, start_clip: bool = False) -> torch.Tensor:
        """The next clip's tokens ``(B, N)`` after ``context`` ``(B, c, N)`` (1 <= c <= K, plus the
        start clip in front with start_clip) whose clips had ``context_actions`` ``(B, c)``, for
        ``actions`` ``(B,)``. random: a CPU generator (the draws are made on the CPU, so a seed gives
        the same clip on any device)."""
        steps = steps or self.config.decoding_steps
        batch, _, count = context.shape
        device = context.device
        mask_values = torch.tensor(self.codebook_sizes, device=device)[self.group_of_token]  # (N,)
        clip = mask_values.expand(batch, count).clone()  # (B, N), all [MASK]
        all_actions = self.window_actions(torch.cat([context_actions, actions[:, None]], dim=1).to(device))  # (B, c + 1)
        for step in range(steps):
            masked = clip == mask_values  # (B, N)
            logits = self(torch.cat([context, clip[:, None]], dim=1), all_actions, last_clip_only=True,
                          start_clip=start_clip)
            drawn, confidence = self.draw_codes(logits, random, temperature, top_k)  # (B, N) each
            if temperature > 0:  # MaskGIT's annealed noise on the choice of tokens to keep
                noise = -torch.log(-torch.log(torch.rand(confidence.shape, generator=random).clamp(1e-20, 1.0)))
                confidence = confidence + temperature * (1 - (step + 1) / steps) * noise.to(device)
            confidence = confidence.masked_fill(~masked, math.inf)  # tokens already fixed stay
            still_masked = int(math.floor(count * float(cosine_mask_ratio(torch.tensor((step + 1) / steps)))))
            candidate = torch.where(masked, drawn, clip)
            if still_masked > 0:
                rank = confidence.argsort(dim=1).argsort(dim=1)  # (B, N): 0 = least confident
                candidate = torch.where(rank < still_masked, mask_values.expand_as(clip), candidate)
            clip = candidate
        return clip

    def draw_codes(self, logits: Sequence[torch.Tensor], random: torch.Generator, temperature: float,
                   top_k: Optional[int]):
        """Draw every token's code from the last clip's logits (as :meth:`forward` returns them with
        ``last_clip_only``): each sub-vocabulary drawn on its own (Gumbel-max at ``temperature``, the
        argmax at 0; top-k per sub-vocabulary). Returns codes ``(B, N)`` and their log-probabilities ``(B, N)``."""
        codes, confidences = [], []
        for factors, group_logits in zip(self.group_factors, logits):
            digits, confidence = [], 0
            for factor_logits in group_logits[:, 0].float().split(factors, dim=-1):  # each (B, N_g, V_f)
                if top_k is not None and top_k < factor_logits.shape[-1]:
                    threshold = factor_logits.topk(top_k, dim=-1).values[..., -1:]  # (B, N_g, 1)
                    factor_logits = factor_logits.masked_fill(factor_logits < threshold, -math.inf)
                log_probs = factor_logits.log_softmax(dim=-1)
                if temperature > 0:
                    uniform = torch.rand(log_probs.shape, generator=random).clamp(1e-20, 1.0)
                    gumbel = -torch.log(-torch.log(uniform)).to(log_probs.device)
                    digit = (log_probs / temperature + gumbel).argmax(dim=-1)  # (B, N_g)
                else:
                    digit = log_probs.argmax(dim=-1)
                digits.append(digit)
                confidence = confidence + log_probs.gather(-1, digit[..., None])[..., 0]  # (B, N_g)
            codes.append(digits_to_codes(digits, factors))
            confidences.append(confidence)
        return torch.cat(codes, dim=1), torch.cat(confidences, dim=1)

    def start(self, start_tokens, context_clips: Optional[int] = None, seed: Optional[int] = 0,
              steps: Optional[int] = None, temperature: float = 1.0, top_k: Optional[int] = None) -> "Rollout":
        """A :class:`Rollout` from ``start_tokens`` (a mapping of ``(B, ...)`` one clip or ``(B, n, ...)`` clips)."""
        return Rollout(self, start_tokens, context_clips, seed, steps, temperature, top_k)

    @torch.no_grad()
    def rollout(self, start_tokens, actions: Union[torch.Tensor, Sequence[Sequence[int]]], context_clips: Optional[int] = None,
                seed: Optional[int] = 0, steps: Optional[int] = None, temperature: float = 1.0, top_k: Optional[int] = None,
                progress: bool = False) -> Dict[str, torch.Tensor]:
        """Predict one clip per action. actions ``(B, A)`` indices into ``config.actions``.

        Returns the predicted tokens ``{"structure": (B, A, Q, h_S, w_S), ...}``; the same seed gives
        the same clips. See :class:`Rollout` for the window and the other settings.
        """
        actions = torch.as_tensor(actions, dtype=torch.long)
        state = self.start(start_tokens, context_clips, seed, steps, temperature, top_k)
        clips = [state.step(actions[:, index]) for index in tqdm(range(actions.shape[1]), desc="rollout", unit="clip",
                                                                 disable=not progress)]
        return {name: torch.stack([clip[name] for clip in clips], dim=1) for name in clips[0]} if clips else {}


class Rollout:
    """A rollout in progress: the window of the last ``context_clips`` clips and their actions,
    and the first start clip for a model with ``start_window``.

    ``step(actions (B,))`` predicts the next clip, returns its tokens (``{"structure": (B, Q, h_S,
    w_S), ...}``) and slides the window, so that what a rollout holds does not grow with its
    length. context_clips: K (None: the model's; at most the model's). The start clips have "no
    action". seed: of the CPU generator all draws come from (None: a random seed).
    """

    def __init__(self, model: WorldModel, start_tokens, context_clips: Optional[int] = None, seed: Optional[int] = 0,
                 steps: Optional[int] = None, temperature: float = 1.0, top_k: Optional[int] = None):
        limit = model.config.context_clips
        self.context_clips = limit if context_clips is None else int(context_clips)
        if not 1 <= self.context_clips <= limit:
            raise WorldModelError(f"context_clips must be in [1, {limit}] for this model, got {context_clips}")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise WorldModelError(f"temperature must be >= 0 and top_k >= 1, got {temperature} and {top_k}")
        self.model, self.steps, self.temperature, self.top_k = model, steps, float(temperature), top_k
        tokens = latent_dict(start_tokens)
        if tokens["structure"].dim() == len(model.config.token_shapes["structure"]) + 1:  # one clip: (B, ...)
            tokens = {name: value[:, None] for name, value in tokens.items()}  # (B, 1, ...)
        device = next(model.parameters()).device
        packed = model.pack_clips(tokens).to(device)  # (B, n, N)
        # The start clip kept in front of the window once it has left it (start_window); else None.
        self.start_clip = packed[:, :1] if model.config.start_window else None  # (B, 1, N)
        self.clips_seen = packed.shape[1]
        self.window = packed[:, -self.context_clips:]  # (B, c, N)
        self.actions = torch.full(self.window.shape[:2], model.no_action, dtype=torch.long, device=device)  # (B, c)
        self.random = torch.Generator(device="cpu")
        if seed is None:
            self.random.seed()
        else:
            self.random.manual_seed(int(seed))

    def step(self, actions: Union[torch.Tensor, Sequence[int]]) -> Dict[str, torch.Tensor]:
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.window.device).reshape(-1)
        if actions.shape[0] != self.window.shape[0] or int(actions.min()) < 0 or int(actions.max()) >= self.model.no_action:
            raise WorldModelError(f"give one action in [0, {self.model.no_action}) per rollout, got {actions.tolist()}")
        context, context_actions = self.window, self.actions
        keep_start = self.start_clip is not None and self.clips_seen > self.context_clips
        if keep_start:  # (B, 1 + c, N), (B, 1 + c): the start clip in front, with "no action"
            context = torch.cat([self.start_clip, context], dim=1)
            context_actions = torch.cat([torch.full_like(context_actions[:, :1], self.model.no_action), context_actions], dim=1)
        clip = self.model.predict_clip(context, context_actions, actions, self.random, self.steps, self.temperature,
                                       self.top_k, start_clip=keep_start)
        self.clips_seen += 1
        self.window = torch.cat([self.window, clip[:, None]], dim=1)[:, -self.context_clips:]  # (B, <= K, N)
        self.actions = torch.cat([self.actions, actions[:, None]], dim=1)[:, -self.context_clips:]  # (B, <= K)
        return {name: value[:, 0] for name, value in self.model.unpack_clips(clip[:, None]).items()}


__all__ = ["WORLD_CHECKPOINT_KEY", "WORLD_FORMAT", "WorldModel", "WorldModelConfig", "WorldModelError", "Rollout",
           "cosine_mask_ratio", "digits_to_codes", "level_digits"]
