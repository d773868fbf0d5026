"""The official frame-shuffling switches: `shuffle_content` and the `...Dis` variant (`shuffle_content_ratio`).

Official behaviour (microsoft/VidTok, vidtwin/models/vidtwin_ae.py), which these tests pin down:
- `shuffle_content`: in `encode`, after the encoder, each clip's token frames get their own
  `torch.randperm`, clip by clip; only the temporal Q-Former (structure) reads the shuffled tokens.
- `VidAutoEncoderQformerCompactSymDis`: clip by clip, `torch.rand(1) < shuffle_content_ratio` selects
  the clip, and a selected clip's *input* frames get a `torch.randperm`; structure comes from the
  encoded shuffled copy, dynamics from the original.
Here both shuffle in training mode; `encode(..., shuffle=True)` also in eval, as the official code does.

The Q-Former cross-attends to the token frames with no position embedding of its own, so it reads
them as a set: permuting them after the encoder (`shuffle_content`) changes the structure latent
only by float rounding. Permuting the input frames (the Dis variant) changes what the encoder,
with its temporal position embedding and causal attention, makes of them.
"""

import functools
import logging
import math

import pytest
import torch
from einops import rearrange
from omegaconf import OmegaConf
from safetensors.torch import load_file

from vidtwin import load_model
from vidtwin.config import ConfigError, autoencoder_config_from
from vidtwin.models import VidTwin
from vidtwin.models.config import LATENT_NAMES, VidTwinConfig, replace

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, OFFICIAL_IO, outputs_in_official_layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

DIS_TARGET = "vidtwin.models.vidtwin_ae.VidAutoEncoderQformerCompactSymDis"
SMALL = VidTwinConfig(
    input_size=(6, 32, 32), patch_size=(1, 8, 8), hidden_size=32, depth=1, num_heads=2, num_queries=3,
    query_hidden_size=16, qformer_num_layers=2, qformer_intermediate_size=32, qformer_num_heads=2,
    qformer_dropout=0.0,  # training mode is then random only where shuffling makes it so
    init_ch=8, cont_num_blocks=1, expect_ch=4, motion_num_blocks=1, d_dim=4,
)
BATCH = 6


def small_model(**changes) -> VidTwin:
    """A small model with weights large enough that a different frame order visibly changes the structure."""
    torch.manual_seed(0)
    model = VidTwin(replace(SMALL, **changes))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 1 / math.sqrt(param[0].numel()))
            else:
                param.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def video():
    return torch.rand(BATCH, 3, *SMALL.input_size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def per_clip_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest absolute difference of each clip, relative to how much the clips of `a` differ from their mean."""
    return (a - b).flatten(1).abs().amax(dim=1) / (a - a.mean(dim=0)).abs().max()


def official_draws(clips: int, frames: int, seed: int, share=None) -> dict:
    """The official code's draws, replayed: {clip: permutation} for the clips it shuffles."""
    generator = torch.Generator().manual_seed(seed)
    orders = {}
    for clip in range(clips):
        if share is None or torch.rand(1, generator=generator).item() < share:
            orders[clip] = torch.randperm(frames, generator=generator)
    return orders


# ----------------------------------------------------------------------------- shuffle_content
@torch.no_grad()
def test_shuffle_content_permutes_each_clips_token_frames_before_the_temporal_qformer(video):
    model = small_model(shuffle_content=True)
    seen = {}
    model.encoder.register_forward_hook(lambda module, args, output: seen.setdefault("tokens", output))
    model.temporal_qformer.register_forward_pre_hook(lambda module, args: seen.setdefault("qformer_input", args[0]))
    model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(5))

    tokens = seen["tokens"]  # (B, C, t, h, w)
    orders = official_draws(BATCH, tokens.shape[2], seed=5)
    assert len(orders) == BATCH  # every clip, one permutation each
    assert len({tuple(order.tolist()) for order in orders.values()}) > 1  # per clip, not one for the batch
    expected = torch.stack([tokens[clip][:, orders[clip]] for clip in range(BATCH)])  # (B, C, t, h, w)
    assert torch.equal(seen["qformer_input"], rearrange(expected, "B C T H W -> (B H W) T C"))


@torch.no_grad()
def test_shuffle_content_moves_the_structure_only_by_rounding_and_leaves_the_dynamics(video):
    # The Q-Former is blind to the order of its key frames, so the official switch is a no-op on
    # the function; if the Q-Former ever read positions, this test would say so.
    model = small_model(shuffle_content=True)
    plain = model.encode(video)  # eval mode: no shuffling unless asked
    shuffled = model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert per_clip_change(plain.structure, shuffled.structure).max() < 1e-3
    assert torch.equal(plain.dynamics_x, shuffled.dynamics_x)
    assert torch.equal(plain.dynamics_y, shuffled.dynamics_y)
    # The input frames' order does matter to the structure: the encoder's tokens carry it.
    reversed_frames = model.encode(video.flip(2))
    assert per_clip_change(plain.structure, reversed_frames.structure).min() > 1e-2


@torch.no_grad()
def test_training_mode_shuffles_and_eval_mode_does_not_unless_asked(video):
    model = small_model(shuffle_content_ratio=1.0)
    reference = small_model()  # the same weights, no shuffling configured
    assert torch.equal(model.encode(video).structure, reference.encode(video).structure)
    model.train()
    trained = model.encode(video, sample=False, generator=torch.Generator().manual_seed(5))
    asked = model.eval().encode(video, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(trained.structure, asked.structure)
    assert per_clip_change(reference.encode(video).structure, trained.structure).min() > 5e-3
    assert torch.equal(model.train().encode(video, sample=False, shuffle=False).structure,
                       reference.encode(video).structure)


@torch.no_grad()
def test_shuffles_are_reproducible_from_a_generator_or_the_global_seed(video):
    model = small_model(shuffle_content_ratio=1.0)
    first, second = (model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(7)).structure
                     for _ in range(2))
    other = model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(8)).structure
    assert torch.equal(first, second) and not torch.equal(first, other)
    torch.manual_seed(3)
    global_first = model.encode(video, shuffle=True).structure
    torch.manual_seed(3)
    assert torch.equal(model.encode(video, shuffle=True).structure, global_first)


@torch.no_grad()
def test_without_the_switches_shuffle_changes_nothing_bit_for_bit(video):
    model = small_model()
    plain = model.encode(video)
    for shuffle in (True, False):
        latents = model.encode(video, shuffle=shuffle, generator=torch.Generator().manual_seed(5))
        for name in LATENT_NAMES:
            assert torch.equal(getattr(latents, name), getattr(plain, name)), name
    assert torch.equal(model(video, shuffle=True)[0], model(video)[0])


# ----------------------------------------------------------------------------- the Dis variant
@torch.no_grad()
@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_dis_share_takes_structure_from_a_shuffled_copy_of_the_drawn_clips(video, ratio):
    model = small_model(shuffle_content_ratio=ratio)
    plain = model.encode(video)
    latents = model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(4))

    # The official rule: one uniform draw per clip, then a permutation of the input frames for a drawn clip.
    orders = official_draws(BATCH, video.shape[2], seed=4, share=ratio)
    if ratio == 1.0:
        assert sorted(orders) == list(range(BATCH))
    else:
        assert 0 < len(orders) < BATCH, "seed 4 should draw some clips and leave others (pick another seed)"
    change = per_clip_change(plain.structure, latents.structure)
    for clip in range(BATCH):
        if clip in orders:
            # Structure is that of the frame-shuffled input clip, encoded on its own.
            copy = model.encode(video[clip:clip + 1, :, orders[clip]]).structure[0]
            torch.testing.assert_close(latents.structure[clip], copy, rtol=0, atol=1e-5)
            assert change[clip] > 5e-3, clip
        else:
            assert torch.equal(latents.structure[clip], plain.structure[clip]), clip
    assert torch.equal(latents.dynamics_x, plain.dynamics_x)
    assert torch.equal(latents.dynamics_y, plain.dynamics_y)


@torch.no_grad()
def test_dis_share_is_a_per_clip_chance():
    # Over many clips the drawn share is close to the ratio (the official rule is not an exact count).
    model = small_model(shuffle_content_ratio=0.25)
    calls = []
    original = model.encoder.forward
    model.encoder.forward = lambda video: calls.append(video.shape[0]) or original(video)
    video = torch.zeros(64, 3, *SMALL.input_size)
    model.encode(video, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert calls[0] == 64 and len(calls) == 2  # the batch, then the drawn clips' shuffled copies
    assert calls[1] == len(official_draws(64, SMALL.input_size[0], seed=0, share=0.25))
    assert 8 <= calls[1] <= 24


@pytest.mark.parametrize("changes, message", [
    ({"shuffle_content_ratio": 1.5}, "shuffle_content_ratio must lie in"),
    ({"shuffle_content_ratio": -0.1}, "shuffle_content_ratio must lie in"),
    ({"shuffle_content": True, "shuffle_content_ratio": 0.5}, "alternatives"),
])
def test_invalid_shuffle_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **changes)


# ----------------------------------------------------------------------------- official configs
def official_variant(tmp_path, target=None, **params):
    """A copy of the tiny official YAML with other params (and target), written into tmp_path."""
    config = OmegaConf.load(OFFICIAL_CONFIG)
    if target is not None:
        config.model.target = target
    for key, value in params.items():
        config.model.params[key] = value
    path = tmp_path / "official.yaml"
    OmegaConf.save(config, path)
    return path


@pytest.mark.parametrize("shuffle", [False, True], ids=["eval-default", "shuffled-as-official-eval"])
def test_official_config_with_shuffle_content_loads_and_matches_the_recorded_tensors(tmp_path, shuffle):
    model = load_model(official_variant(tmp_path, shuffle_content=True), OFFICIAL_CKPT)
    assert model.config.shuffle_content and model.config.shuffle_content_ratio == 0.0
    recorded = load_file(str(OFFICIAL_IO))
    # Eval mode does not shuffle (a deliberate difference, docs/training.md); shuffled as the official eval
    # does, the outputs differ only by rounding, since the Q-Former is blind to the frames' order.
    model.encode = functools.partial(model.encode, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    ours = outputs_in_official_layout(model, recorded["x"], recorded["x2"])
    assert max((value - recorded[name]).abs().max().item() for name, value in ours.items()) < 1e-4


def test_official_dis_target_translates_its_ratio(tmp_path):
    config = autoencoder_config_from(str(official_variant(tmp_path, DIS_TARGET, shuffle_content_ratio=0.25)))
    assert config.shuffle_content_ratio == 0.25 and not config.shuffle_content
    # The rest is the same architecture as the plain target's, so the official weights load.
    assert replace(config, shuffle_content_ratio=0.0) == autoencoder_config_from(str(OFFICIAL_CONFIG))
    model = load_model(official_variant(tmp_path, DIS_TARGET), OFFICIAL_CKPT)
    assert model.config.shuffle_content_ratio == 0.5  # the official class's default


def test_official_dis_target_ignores_shuffle_content_as_the_official_class_does(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vidtwin.config"):
        config = autoencoder_config_from(str(official_variant(
            tmp_path, DIS_TARGET, shuffle_content=True, shuffle_content_ratio=0.75, space_qformer_config={})))
    assert config.shuffle_content_ratio == 0.75 and not config.shuffle_content
    assert "shuffle_content is ignored" in caplog.text and "ignored: space_qformer_config" in caplog.text


@pytest.mark.parametrize("target, params, message", [
    (None, {"shuffle_content_ratio": 0.5}, "belongs to model.target"),
    (DIS_TARGET, {"shuffle_content_ratio": 2.0}, "shuffle_content_ratio must lie in"),
    (DIS_TARGET, {"shuffle_content_ratio": True}, "shuffle_content_ratio must be a number"),
    (None, {"shuffle_content": "yes"}, "shuffle_content must be true or false"),
])
def test_bad_official_shuffle_settings_are_one_line_errors(tmp_path, target, params, message):
    with pytest.raises(ConfigError, match=message) as caught:
        autoencoder_config_from(str(official_variant(tmp_path, target, **params)))
    assert "\n" not in str(caught.value)
