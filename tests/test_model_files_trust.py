"""Damaged or hostile model files: integer or non-finite weights, a config.json whose sizes ask for far
more memory than its weights hold, and a pickle that would run code. Each is refused in one line
before the model runs (or is built), for all three models and every file format."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, TINY_CONFIG
from vidtwin import VidTwin, load_model
from vidtwin.cli import main
from vidtwin.data.video_io import write_video
from vidtwin.generation import GeneratorConfig, LatentGenerator, WorldModel, WorldModelConfig
from vidtwin.state_dict_io import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

# A float weight of each model that every config has, and the `vidtwin train` checkpoint entries of
# the latent models (vidtwin.pretrained.ModelFormat: state_prefix, checkpoint_key).
VICTIM = {"autoencoder": "decoder.final_layer.linear.weight", "generator": "tokens.inputs.0.weight",
          "world": "heads.0.weight"}
TRAINING_ENTRIES = {"generator": ("generator.", "vidtwin_generator"), "world": ("world.", "vidtwin_world_model")}


def tiny(kind):
    torch.manual_seed(0)
    if kind == "autoencoder":
        return load_model(TINY_CONFIG)
    if kind == "generator":
        return LatentGenerator(GeneratorConfig())
    return WorldModel(WorldModelConfig.from_preset("tiny", hidden_size=32, depth=1, num_heads=2, actions=["L", "R"]))


def damaged(state, key, defect):
    """A copy of ``state`` whose ``key`` holds int64 values of its shape, or one NaN."""
    state = dict(state)
    if defect == "int64":
        state[key] = state[key].round().long()
    else:
        state[key] = state[key].clone()
        state[key].view(-1)[3] = float("nan")
    return state


def write_format(model, kind, fmt, state, folder):
    """``state`` written as ``fmt``; returns (what from_pretrained / load_model is given, config argument)."""
    if fmt == "save_pretrained":
        model.save_pretrained(folder)
        save_file(state, str(folder / "model.safetensors"))
        return folder, None
    if fmt == "safetensors":
        save_file(state, str(folder / "weights.safetensors"))
        return folder / "weights.safetensors", model.config
    path = folder / "model.ckpt"
    if kind == "autoencoder":  # a Lightning checkpoint of `vidtwin train`: the autoencoder under `autoencoder.`
        torch.save({"state_dict": {f"autoencoder.{k}": v for k, v in state.items()}}, path)
    else:
        prefix, entry = TRAINING_ENTRIES[kind]
        torch.save({"state_dict": {prefix + k: v for k, v in state.items()},
                    entry: {"config": model.config.to_dict(), "autoencoder": None}}, path)
    return path, model.config


def load(kind, reference, config):
    if kind == "autoencoder":
        return VidTwin.from_pretrained(reference, config=config)
    return (LatentGenerator if kind == "generator" else WorldModel).from_pretrained(reference, config=config)


# ---------------------------------------------------------------------------------------- wrong-kind weights
@pytest.mark.parametrize("defect", ["int64", "nan"])
@pytest.mark.parametrize("fmt", ["save_pretrained", "safetensors", "training checkpoint"])
@pytest.mark.parametrize("kind", ["autoencoder", "generator", "world"])
def test_integer_or_non_finite_weights_are_refused_naming_the_tensor(kind, fmt, defect, tmp_path):
    model = tiny(kind)
    key = VICTIM[kind]
    state = damaged({k: v.contiguous() for k, v in model.state_dict().items()}, key, defect)
    reference, config = write_format(model, kind, fmt, state, tmp_path)
    expected = "integer values for floating-point weights" if defect == "int64" else "NaN or infinite values"
    with pytest.raises(CheckpointError, match=f"{expected}.*{key}") as error:
        load(kind, reference, config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("defect", ["int64", "nan"])
def test_an_official_checkpoint_with_damaged_weights_is_refused(defect, tmp_path):
    checkpoint = torch.load(OFFICIAL_CKPT, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = damaged(checkpoint["state_dict"], "decoder.final_layer.linear.weight", defect)
    torch.save(checkpoint, tmp_path / "official.ckpt")
    with pytest.raises(CheckpointError, match=r"damaged weights.*decoder\.final_layer\.linear\.weight"):
        load_model(OFFICIAL_CONFIG, tmp_path / "official.ckpt")


def small_video(path):
    frames = (torch.rand(8, 64, 64, 3) * 255).to(torch.uint8)
    write_video(path, frames, fps=8.0)
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if "error:" in line], captured.err


def test_reconstruct_refuses_nan_weights_in_one_line_before_writing(tmp_path, capsys):
    model = tiny("autoencoder")
    reference, _ = write_format(model, "autoencoder", "save_pretrained",
                                damaged(model.state_dict(), VICTIM["autoencoder"], "nan"), tmp_path / "model")
    video = small_video(tmp_path / "clip.mp4")
    code, errors, err = run_cli(capsys, "reconstruct", "--ckpt", reference, "--input", video,
                                "--output", tmp_path / "out.mp4", "--device", "cpu", "--quiet")
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("vidtwin reconstruct: error:") and VICTIM["autoencoder"] in errors[0]
    assert "NaN or infinite" in errors[0]
    assert not (tmp_path / "out.mp4").exists()


# ---------------------------------------------------------------------------------------- memory bombs
BOMBS = {  # settings that multiply the memory the model needs, far past what its weights hold
    "autoencoder": ("autoencoder", {"hidden_size": 8192, "num_heads": 8}),  # about 13 GB
    "generator": ("generator", {"hidden_size": 16384, "depth": 8}),  # about 100 GB
    "world": ("world_model", {"hidden_size": 16384, "depth": 8}),
}


@pytest.fixture
def no_real_build(monkeypatch):
    """Make building any of the three models on a real device an error (building on the ``meta``
    device, which allocates nothing, stays allowed): a loader that built the huge model before
    comparing sizes would otherwise take tens of GB, or be killed."""
    def guard(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            if torch.empty(0).device.type != "meta":
                raise AssertionError(f"{cls.__name__} was built for real before its size was checked")
            original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)

    for cls in (VidTwin, LatentGenerator, WorldModel):
        guard(cls)


@pytest.mark.parametrize("kind", ["autoencoder", "generator", "world"])
def test_a_config_far_larger_than_its_weights_is_refused_before_building(kind, tmp_path, request):
    tiny(kind).save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    entry, sizes = BOMBS[kind]
    values[entry].update(sizes)
    (tmp_path / "config.json").write_text(json.dumps(values))
    request.getfixturevalue("no_real_build")
    with pytest.raises(CheckpointError, match=r"config describes [\d,]+ weight values \([\d.]+ GB\) but the "
                                              r"weights hold [\d,]+: nothing was built") as error:
        load(kind, tmp_path, None)
    assert "\n" not in str(error.value) and "shape mismatches" in str(error.value)


def test_reconstruct_refuses_a_memory_bomb_config_in_one_line(tmp_path, capsys, request):
    tiny("autoencoder").save_pretrained(tmp_path / "model")
    values = json.loads((tmp_path / "model" / "config.json").read_text())
    values["autoencoder"].update(BOMBS["autoencoder"][1])
    (tmp_path / "model" / "config.json").write_text(json.dumps(values))
    video = small_video(tmp_path / "clip.mp4")
    request.getfixturevalue("no_real_build")
    code, errors, err = run_cli(capsys, "reconstruct", "--ckpt", tmp_path / "model", "--input", video,
                                "--output", tmp_path / "out.mp4", "--device", "cpu", "--quiet")
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("vidtwin reconstruct: error:") and "nothing was built" in errors[0]
    assert not (tmp_path / "out.mp4").exists()


# ---------------------------------------------------------------------------------------- unsafe pickles
class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


def write_payload(path, marker, how):
    state = {"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": Payload(marker)}
    if how == "torch.save":
        torch.save(state, path)
    else:  # a bare pickle, of the protocol torch's legacy format uses (2) or Python's default (4 or 5)
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=2 if how == "pickle protocol 2" else pickle.DEFAULT_PROTOCOL)
    return path


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2", "pickle default protocol"])
def test_a_malicious_pickle_is_refused_as_needing_full_unpickling(how, tmp_path):
    marker = tmp_path / "MARKER"
    path = write_payload(tmp_path / "model.ckpt", marker, how)
    with pytest.raises(CheckpointError) as error:
        load_model(TINY_CONFIG, path)
    message = str(error.value)
    assert "needs full unpickling" in message and "exec" in message, message
    assert "--allow-unsafe-pickle" in message and "allow_unsafe_pickle=True" in message
    assert "damaged" not in message
    assert not marker.exists()


def test_reconstruct_refuses_a_malicious_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    path = write_payload(tmp_path / "model.ckpt", marker, "pickle default protocol")
    video = small_video(tmp_path / "clip.mp4")
    code, errors, err = run_cli(capsys, "reconstruct", "--config", TINY_CONFIG, "--ckpt", path, "--input", video,
                                "--output", tmp_path / "out.mp4", "--device", "cpu", "--quiet")
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("vidtwin reconstruct: error:")
    assert "needs full unpickling" in errors[0] and "--allow-unsafe-pickle" in errors[0]
    assert not marker.exists() and not (tmp_path / "out.mp4").exists()


def test_a_damaged_checkpoint_is_still_called_damaged(tmp_path):
    torch.save({"state_dict": tiny("autoencoder").state_dict()}, tmp_path / "whole.ckpt")
    (tmp_path / "torn.ckpt").write_bytes((tmp_path / "whole.ckpt").read_bytes()[:3000])
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    for name in ("torn.ckpt", "text.ckpt"):
        with pytest.raises(CheckpointError, match="damaged, or a file of another kind"):
            load_model(TINY_CONFIG, tmp_path / name)


def test_good_files_still_load_in_every_format(tmp_path):
    # The checks refuse only what is wrong: each model's own files load, weights intact.
    for kind in ("autoencoder", "generator", "world"):
        model = tiny(kind)
        for fmt in ("save_pretrained", "safetensors", "training checkpoint"):
            folder = tmp_path / kind / fmt.replace(" ", "_")
            folder.mkdir(parents=True)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            loaded = load(kind, *write_format(model, kind, fmt, state, folder))
            assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items()), (kind, fmt)
