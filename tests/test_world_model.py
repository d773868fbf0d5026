"""The world model (vidtwin.generation.world): no loss on the context, actions that matter,
deterministic and bounded rollouts, a tiny model that learns, strict files."""

import pytest
import torch

from vidtwin.errors import UserError
from vidtwin.generation import WorldModel, WorldModelConfig, WorldModelError, load_world_model, save_world_model
from vidtwin.generation.world import digits_to_codes, level_digits
from vidtwin.state_dict_io import CheckpointError

from world_helpers import random_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


def tiny_model(seed=0, **settings) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig.from_preset("tiny", hidden_size=32, depth=1, num_heads=2, **settings))


def test_tokens_pack_per_clip_and_back():
    model = tiny_model()
    batch = random_windows(model.config, batch=3, clips=3)
    packed = model.pack_clips(batch)  # (B, n, N)
    assert packed.shape == (3, 3, 2 * 4 * 4 + 4 * 8)
    assert all(torch.equal(value, batch[name]) for name, value in model.unpack_clips(packed).items())
    with pytest.raises(WorldModelError, match="expected"):
        model.pack_clips({**batch, "structure": batch["structure"][..., :3]})


def test_the_context_and_the_unmasked_tokens_get_no_loss():
    model = tiny_model()
    batch = random_windows(model.config, batch=4, clips=3)
    packed = model.pack_clips(batch)
    inputs, mask = model.mask_last_clip(packed, torch.Generator().manual_seed(1))
    assert not mask[:, :-1].any() and mask[:, -1].any() and not mask[:, -1].all(dim=1).all()
    logits = [part.detach().requires_grad_() for part in model(inputs, model.window_actions(batch["actions"]))]
    model.masked_loss(logits, packed, mask).backward()
    for part_logits, part_mask in zip(logits, mask.split(model.group_tokens, dim=2)):
        gradient_norm = part_logits.grad.abs().sum(dim=-1)  # (B, n, N_g)
        assert torch.all(gradient_norm[~part_mask] == 0)  # context clips and unmasked tokens
        assert torch.all(gradient_norm[part_mask] > 0)
    # The training loss is that loss: the same masks give the same value, whatever the context's targets.
    random = torch.Generator().manual_seed(1)
    training = model.training_loss(batch, generator=random, context_clips=2)
    assert training.item() == pytest.approx(model.masked_loss([p.detach() for p in logits], packed, mask).item(), rel=1e-5)


def test_context_noise_replaces_context_tokens_alone_and_only_in_training():
    model = tiny_model(context_noise=0.5)
    batch = random_windows(model.config, batch=8, clips=3)
    packed = model.pack_clips(batch)
    noisy = model.corrupt_context(packed, torch.Generator().manual_seed(0))
    changed = noisy != packed  # (B, n, N)
    assert not changed[:, -1].any() and 0 < changed[:, :-1].float().mean() < 0.5
    assert int(noisy.max()) < 125 and int(noisy.min()) >= 0
    # Training sees the noise; rollouts, which read real context, do not. (Random weights: the
    # adaLN-Zero blocks start as the identity, and an untrained model reads no context at all.)
    torch.manual_seed(2)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    clean = tiny_model()
    clean.load_state_dict(model.state_dict())
    noisy_loss, clean_loss = (m.training_loss(batch, generator=torch.Generator().manual_seed(1), context_clips=2).item()
                              for m in (model, clean))
    assert noisy_loss != clean_loss
    start = {name: batch[name][:, 0] for name in ("structure", "dynamics_x", "dynamics_y")}
    actions = batch["actions"][:, 1:]
    noisy_rollout, clean_rollout = (m.eval().rollout(start, actions, seed=3) for m in (model, clean))
    assert all(torch.equal(noisy_rollout[name], clean_rollout[name]) for name in clean_rollout)
    with pytest.raises(UserError, match="context_noise"):
        tiny_model(context_noise=1.0)


def test_last_clip_only_computes_what_the_full_forward_gives_for_the_last_clip():
    # The last block computes the last clip's outputs alone; every earlier block, and the last
    # block's keys, still see the whole window. Random weights: adaLN-Zero starts every block as
    # the identity, which would hide a block that skipped positions it should not have.
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig.from_preset("tiny", hidden_size=32, depth=2, num_heads=2,
                                                    context_clips=1, start_window=4))
    torch.manual_seed(3)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    batch = random_windows(model.config, batch=2, clips=3)
    packed = model.pack_clips(batch)
    actions = model.window_actions(batch["actions"])
    for clips, start_clip in ((slice(1, None), False), (slice(None), True)):  # 2 clips; 3 with the start clip
        full = model(packed[:, clips], actions[:, clips], start_clip=start_clip)
        last = model(packed[:, clips], actions[:, clips], last_clip_only=True, start_clip=start_clip)
        for full_part, last_part in zip(full, last):
            assert last_part.shape == full_part[:, -1:].shape
            torch.testing.assert_close(last_part, full_part[:, -1:], rtol=1e-5, atol=1e-5)  # fp32 reordering
    # The same gradients too: the skipped positions fed no loss.
    model.zero_grad()
    sum(part[:, -1:].sum() for part in model(packed, actions, start_clip=True)).backward()
    full_grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    sum(part.sum() for part in model(packed, actions, last_clip_only=True, start_clip=True)).backward()
    for full_grad, parameter in zip(full_grads, model.parameters()):
        torch.testing.assert_close(parameter.grad, full_grad, rtol=1e-4, atol=1e-5)


def test_context_clips_do_not_see_the_clip_being_predicted():
    model = tiny_model()
    batch = random_windows(model.config, batch=2, clips=3)
    packed = model.pack_clips(batch)
    changed = packed.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 125
    before, after = (model(tokens, batch["actions"]) for tokens in (packed, changed))
    for old, new in zip(before, after):
        assert torch.equal(old[:, :-1], new[:, :-1]) and not torch.equal(old[:, -1], new[:, -1])


def test_the_action_changes_the_prediction_once_trained():
    model = tiny_model()
    windows = random_windows(model.config, batch=4, clips=2)
    packed = model.pack_clips(windows)[:1]

    def last_logits(action):
        return model(packed, torch.tensor([[model.no_action, action]]), last_clip_only=True)[0].detach()

    # Zero-initialized (and the adaLN-Zero blocks start as the identity): an untrained model ignores actions.
    assert torch.equal(last_logits(0), last_logits(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.training_loss(windows, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.action_embedding.weight.abs().sum() > 0
    assert not torch.allclose(last_logits(0), last_logits(1))


def _action_task(config, batch=8):
    """Windows whose last clip is all code (action + 1) * 10 in both groups: only the action tells it."""
    windows = random_windows(config, batch=batch, clips=2, seed=3)
    windows["actions"][:, 1] = torch.arange(batch) % len(config.actions)
    code = (windows["actions"][:, 1] + 1) * 10
    for name in ("structure", "dynamics_x", "dynamics_y"):
        value = windows[name]
        value[:, 1] = code.reshape(-1, *[1] * (value.dim() - 2))
    return windows, code


def test_level_digits_are_the_fsq_regularizers_levels_of_a_code():
    from vidtwin.models.regularizers import FSQRegularizer

    levels = [8, 5, 5, 5]
    indices = torch.arange(1000)
    digits = level_digits(indices, levels)  # (1000, 4)
    assert torch.equal(digits_to_codes(list(digits.unbind(-1)), levels), indices)
    values = FSQRegularizer(levels).indices_to_codes(indices[None])[0]  # (4, 1000) in [-1, 1]
    for level, size in enumerate(levels):  # each digit is the rank of its channel's value on the level's grid
        grid = values[level].unique()  # sorted
        assert len(grid) == size and torch.equal(grid[digits[:, level]], values[level])


def test_a_model_saved_with_one_table_per_group_still_loads(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    state = model.state_dict()
    old = {key.replace(".0.weight", ".weight") if key.startswith("token_embeddings.") else key: value
           for key, value in state.items()}  # the names before factorized_codes
    assert "token_embeddings.1.weight" in old
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(old)  # strict, as a Lightning resume loads
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in state.items())
    folder = save_world_model(model, tmp_path / "saved")  # and a saved folder, through the strict key check
    weights = folder / "model.safetensors"
    save_file({key.replace(".0.weight", ".weight") if key.startswith("token_embeddings.") else key: value
               for key, value in load_file(weights).items()}, weights)
    loaded = load_world_model(folder)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())


@pytest.mark.parametrize("factorized", [True, False], ids=["per-level", "one-softmax"])
def test_a_tiny_model_overfits_one_batch_and_follows_the_action(factorized):
    model = tiny_model(context_clips=1, factorized_codes=factorized)
    assert [head.out_features for head in model.heads] == ([15, 15] if factorized else [125, 125])
    windows, code = _action_task(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    random = torch.Generator().manual_seed(0)
    first = model.training_loss(windows, generator=random).item()
    for _ in range(60):
        loss = model.training_loss(windows, generator=random)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first
    model.eval()
    start = {name: windows[name][:, 0] for name in ("structure", "dynamics_x", "dynamics_y")}
    predicted = model.rollout(start, windows["actions"][:, 1:], temperature=0.0)
    for name, value in predicted.items():  # (B, 1, ...): every token is the action's code
        assert torch.equal(value.flatten(1), code[:, None].expand_as(value.flatten(1))), name


def test_a_rollout_is_deterministic_for_a_seed():
    model = tiny_model().eval()
    start = {name: value[:, 0] for name, value in random_windows(model.config, batch=2, clips=1).items() if name != "actions"}
    actions = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    first, again = (model.rollout(start, actions, seed=7, top_k=20) for _ in range(2))
    other = model.rollout(start, actions, seed=8, top_k=20)
    assert first["structure"].shape == (2, 4, 2, 4, 4) and first["dynamics_x"].shape == (2, 4, 4, 4)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    assert int(first["structure"].max()) < 125 and int(first["structure"].min()) >= 0


def test_a_rollout_holds_the_same_tensors_at_step_2_and_step_20():
    model = tiny_model().eval()
    start = {name: value[:, 0] for name, value in random_windows(model.config, batch=1, clips=1).items() if name != "actions"}
    state = model.start(start, seed=0)
    held = {}
    for step in range(1, 21):
        state.step([step % 4])
        if step in (2, 20):
            held[step] = [(tensor.shape, tensor.dtype) for tensor in (state.window, state.actions)]
    assert held[2] == held[20] == [((1, 2, model.tokens_per_clip), torch.int64), ((1, 2), torch.int64)]


def test_a_start_window_model_trains_on_the_context_a_rollout_has_at_each_step():
    """Step j sees clips max(0, j - K) .. j - 1, with the start clip (clip 0) in front once it has left them."""
    from vidtwin.generation import WorldModelConfigError

    with pytest.raises(WorldModelConfigError, match="start_window must be 0 .off. or at least context_clips . 2 = 3"):
        WorldModelConfig(context_clips=1, start_window=2)
    model = tiny_model(context_clips=1, start_window=4)
    assert model.config.training_window == 4 and model.clip_embedding.num_embeddings == 3
    batch = random_windows(model.config, batch=3, clips=4)
    packed, actions = model.pack_clips(batch), batch["actions"]
    for target, keep in ((1, [0, 1]), (2, [0, 1, 2]), (3, [0, 2, 3])):
        loss = model.training_loss(batch, torch.Generator().manual_seed(1), target_clip=target)
        inputs, mask = model.mask_last_clip(packed[:, keep], torch.Generator().manual_seed(1))
        logits = model(inputs, model.window_actions(actions[:, keep]), last_clip_only=True, start_clip=target > 1)
        assert loss.item() == pytest.approx(model.masked_loss(logits, packed[:, keep][:, -1:], mask[:, -1:]).item(), rel=1e-5)
    # The kept start clip has its own clip-embedding row, and its tokens reach the prediction (once
    # the blocks are not adaLN-Zero's identity, under which no token sees another).
    with torch.no_grad():
        for parameter in model.transformer.parameters():
            if not parameter.any():
                parameter.normal_(std=0.1)
    inputs = packed[:, [0, 2, 3]]
    window_actions = model.window_actions(actions[:, [0, 2, 3]])
    kept = model(inputs, window_actions, last_clip_only=True, start_clip=True)[0]
    with torch.no_grad():
        model.clip_embedding.weight[2] += 1.0  # the start clip's row
    assert not torch.allclose(model(inputs, window_actions, last_clip_only=True, start_clip=True)[0], kept)
    with torch.no_grad():
        model.clip_embedding.weight[2] -= 1.0
    other_start = torch.cat([packed[:, 1:2], inputs[:, 1:]], dim=1)
    assert not torch.allclose(model(other_start, window_actions, last_clip_only=True, start_clip=True)[0], kept)
    with pytest.raises(WorldModelError, match="target_clip must be in .1, 3."):
        model.training_loss(batch, target_clip=4)
    with pytest.raises(WorldModelError, match="keeps no start clip"):
        tiny_model()(inputs, window_actions, start_clip=True)


def test_a_start_window_rollout_puts_the_start_clip_in_front_and_stays_bounded(monkeypatch):
    model = tiny_model(context_clips=1, start_window=4).eval()
    start = {name: value[:, 0] for name, value in random_windows(model.config, batch=2, clips=1).items() if name != "actions"}
    start_packed = model.pack_clips({name: value[:, None] for name, value in start.items()})[:, 0]  # (B, N)
    seen = []
    predict_clip = model.predict_clip

    def recording(context, context_actions, actions, *args, start_clip=False):
        seen.append((context.clone(), context_actions.clone(), start_clip))
        return predict_clip(context, context_actions, actions, *args, start_clip=start_clip)

    monkeypatch.setattr(model, "predict_clip", recording)
    state = model.start(start, seed=0)
    held = {}
    for step in range(1, 21):
        state.step([step % 4, (step + 1) % 4])
        if step in (2, 20):
            held[step] = [(tensor.shape, tensor.dtype) for tensor in (state.window, state.actions, state.start_clip)]
    assert held[2] == held[20]
    (first_context, _, first_flag), (second_context, second_actions, second_flag) = seen[:2]
    assert first_context.shape[1] == 1 and not first_flag  # step 1: the start clip is the last clip
    assert second_context.shape[1] == 2 and second_flag  # step 2: the start clip in front of clip 1
    for context, _, flag in seen[1:]:
        assert flag and torch.equal(context[:, 0], start_packed)
    assert second_actions[:, 0].tolist() == [model.no_action] * 2 and second_actions[:, 1].tolist() == [1, 2]


def test_sampling_settings_and_actions_are_checked():
    model = tiny_model()
    assert model.action_indices("RRUD") == [2, 2, 3, 0]
    with pytest.raises(WorldModelError, match="unknown action.*'X'.*DLRU") as error:
        model.action_indices("RXR")
    assert isinstance(error.value, UserError)
    start = {name: value[:, 0] for name, value in random_windows(model.config, batch=1, clips=1).items() if name != "actions"}
    with pytest.raises(WorldModelError, match="context_clips"):
        model.start(start, context_clips=3)
    with pytest.raises(WorldModelError, match="one action in"):
        model.start(start).step([4])


def test_save_and_load_are_strict_and_keep_the_autoencoder_record(tmp_path):
    model = tiny_model(actions=["A", "B"])
    model.autoencoder_files = {"config": "ae.yaml", "ckpt": "ae.ckpt"}
    save_world_model(model, tmp_path / "world")
    loaded = load_world_model(tmp_path / "world")
    assert loaded.config == model.config and loaded.autoencoder_files == model.autoencoder_files
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in model.state_dict().items())
    config = (tmp_path / "world" / "config.json").read_text()
    (tmp_path / "world" / "config.json").write_text(config.replace('"hidden_size": 32', '"hidden_size": 64'))
    with pytest.raises(CheckpointError, match="shape"):
        load_world_model(tmp_path / "world")
    with pytest.raises(CheckpointError, match="not a VidTwin world model config"):
        from vidtwin.generation import GeneratorConfig, LatentGenerator

        LatentGenerator(GeneratorConfig()).save_pretrained(tmp_path / "generator")
        load_world_model(tmp_path / "generator")
