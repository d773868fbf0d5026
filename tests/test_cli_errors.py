"""The command-line convention of vidtwin/cli/convention.py, over every entry point's user errors.

Each row runs one entry point (train.py, inference.py, the scripts) on one bad input and checks
the rule: exit code 2, exactly one stderr line that starts ``PROG: error:`` and says what was
wrong, no traceback, and nothing written. Add a row whenever a new user error is found.
"""

import json
import os
import re
import shutil
import socket
from contextlib import ExitStack

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from vidtwin import load_model
from vidtwin.atomic_io import claimed
from vidtwin.data.video_io import write_video
from vidtwin.fvd.i3d import InceptionI3d
from vidtwin.fvd.protocol import ClipProtocol
from vidtwin.fvd.stats import FeatureStats
from vidtwin.fvd.weights import WEIGHTS_FILENAME, file_sha256
from vidtwin.cli import main as inference_main
from vidtwin.cli import train_main

from _training_utils import micro_overrides, tiny_config_files
from conftest import OFFICIAL_CONFIG, REPO, TINY_CONFIG, TINY_FRAMES, immutable_folder, small_tmpfs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

TINY_FSQ_CONFIG = [REPO / "configs" / "tiny.yaml", REPO / "configs" / "tiny_fsq.yaml"]  # an overlay on tiny.yaml


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a small video, its latent file, and files that are not what they claim to be."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    torch.manual_seed(1)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny_other_seed.pt")
    frames = torch.randint(0, 255, (10, 48, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    write_video(root / "clip.mp4", frames, fps=10.0)
    (root / "videos").mkdir()
    (root / "videos" / "clip.mp4").write_bytes((root / "clip.mp4").read_bytes())
    assert inference_main(["encode", "--input", str(root / "clip.mp4"), "--output", str(root / "clip.safetensors"),
                           *model_args(root)]) == 0
    assert inference_main(["encode-dataset", "--input", str(root / "videos"), "--output", str(root / "dataset"),
                           "--num-workers", "0", *dataset_args(root)]) == 0
    torch.manual_seed(0)
    torch.save(load_model(TINY_FSQ_CONFIG).state_dict(), root / "tiny_fsq.pt")
    assert inference_main(["encode", "--input", str(root / "clip.mp4"), "--output", str(root / "tokens.safetensors"),
                           "--config", *map(str, TINY_FSQ_CONFIG), "--ckpt", str(root / "tiny_fsq.pt"), "--device", "cpu",
                           "--quiet"]) == 0
    assert inference_main(["encode-dataset", "--input", str(root / "videos"), "--output", str(root / "dataset_other_weights"),
                           "--num-workers", "0", *dataset_args(root, "tiny_other_seed.pt")]) == 0
    assert inference_main(["encode-dataset", "--input", str(root / "videos"), "--output", str(root / "token_dataset"),
                           "--num-workers", "0", "--config", *map(str, TINY_FSQ_CONFIG), "--ckpt", str(root / "tiny_fsq.pt"),
                           "--accelerator", "cpu", "--quiet"]) == 0
    (root / "notes.txt").write_text("not a checkpoint\n")
    make_fvd_files(root / "fvd")
    (root / "bad.yaml").write_text("model: [unclosed\n")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


def make_fvd_files(folder):
    """Untrained I3D weights in the standard layout (no test here runs them), and real statistics of another protocol."""
    folder.mkdir()
    torch.save(InceptionI3d().state_dict(), folder / WEIGHTS_FILENAME)
    identity = {"weights_sha256": file_sha256(folder / WEIGHTS_FILENAME), **ClipProtocol(frames=12).comparable_fields()}
    stats = FeatureStats(400)
    stats.add(torch.randn(3, 400))
    stats.save(folder / "real_12_frames.safetensors", {"identity": identity})


def model_args(root):
    return ["--config", str(TINY_CONFIG), "--ckpt", str(root / "tiny.pt"), "--device", "cpu", "--quiet"]


def dataset_args(root, ckpt="tiny.pt"):
    return ["--config", str(TINY_CONFIG), "--ckpt", str(root / ckpt), "--accelerator", "cpu", "--quiet"]


def tampered_dataset(files, target, source="dataset", shard=None, manifest=None, index_shards=None):
    """A copy of a latent dataset of ``files`` at ``target`` with its first shard's tensors changed by
    ``shard(tensors)``, its manifest by ``manifest(dict)``, or its index's shard names by ``index_shards(names)``."""
    shutil.copytree(files / source, target)
    if shard is not None:
        path = sorted((target / "shards").iterdir())[0]
        with safe_open(str(path), framework="pt") as reader:
            metadata = dict(reader.metadata())
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
        shard(tensors)
        save_file(tensors, str(path), metadata=metadata)
    if manifest is not None:
        content = json.loads((target / "manifest.json").read_text())
        manifest(content)
        (target / "manifest.json").write_text(json.dumps(content))
    if index_shards is not None:
        with safe_open(str(target / "index.safetensors"), framework="pt") as reader:
            metadata = dict(reader.metadata())
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
        metadata["shards"] = json.dumps(index_shards(json.loads(metadata["shards"])))
        save_file(tensors, str(target / "index.safetensors"), metadata=metadata)
    return target


def swap_first_shard(files, target):
    """The dataset with its shard replaced by the shard of the same name of a dataset of other weights."""
    shutil.copytree(files / "dataset", target)
    name = sorted((target / "shards").iterdir())[0].name
    shutil.copy(files / "dataset_other_weights" / "shards" / name, target / "shards" / name)
    return target


def tampered_latents(files, target, change, source="clip.safetensors"):
    """A copy of ``source`` (clip.safetensors: float latents; tokens.safetensors: FSQ tokens) with
    ``change(tensors, metadata)`` applied."""
    with safe_open(str(files / source), framework="pt") as reader:
        metadata = dict(reader.metadata())
        tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    change(tensors, metadata)
    save_file(tensors, str(target), metadata=metadata)
    return target


def set_meta(**values):
    return lambda tensors, metadata: metadata.update({k: str(v) for k, v in values.items()})


def set_tensor(name, make):
    return lambda tensors, metadata: tensors.update({name: make(tensors[name])})


def assert_one_line(code, err, prog, message, expected_code=2):
    """One ``PROG: error:`` line holding ``message``; ``prog`` "vidtwin" stands for any of its commands."""
    lines = [line for line in err.splitlines() if re.match(rf"{re.escape(prog)}( [a-z-]+)*: error:", line)]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- inference.py
claims = ExitStack()  # output names a case's setup claims, as another run would; released after the case


def _inference_cases():
    """id -> (setup(files, tmp) -> argv, expected message)."""
    decode = lambda latents: lambda f, t: ["decode", "--latents", latents(f, t), "--output", t / "out.mp4", *model_args(f)]  # noqa: E731
    tamper = lambda change: decode(lambda f, t: tampered_latents(f, t / "bad.safetensors", change))  # noqa: E731
    tamper_tokens = lambda change: decode(  # noqa: E731
        lambda f, t: tampered_latents(f, t / "bad.safetensors", change, source="tokens.safetensors"))

    def same_file_spelled_differently(f, t):
        return ["reconstruct", "--input", f / "clip.mp4", "--output", f / "." / ".." / f.name / "clip.mp4", *model_args(f)]

    def symlink_to_input(f, t):
        (t / "link.mp4").symlink_to(f / "clip.mp4")
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "link.mp4", "--overwrite", *model_args(f)]

    def existing_output(f, t):
        (t / "out.mp4").write_bytes(b"somebody's file")
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", *model_args(f)]

    def output_being_written(f, t):
        claims.enter_context(claimed(t / "out.mp4"))  # as a running inference.py holds it (released after the test)
        return ["decode", "--latents", f / "clip.safetensors", "--output", t / "out.mp4", *model_args(f)]

    def output_folder_is_input_folder(f, t):
        (t / "clip.mp4").write_bytes((f / "clip.mp4").read_bytes())
        return ["reconstruct", "--input", t, "--output", t, *model_args(f)]

    def latent_folder(f, t):
        return ["decode", "--latents", t, "--output", t / "out.mp4", *model_args(f)]

    def corrupt_pretrained(f, t):
        load_model(TINY_CONFIG).save_pretrained(t / "pretrained")
        data = (t / "pretrained" / "model.safetensors").read_bytes()
        (t / "pretrained" / "model.safetensors").write_bytes(data[:1000])
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--ckpt", t / "pretrained", "--quiet"]

    def pretrained_folder(config_json):
        """A save_pretrained folder of the tiny model whose config.json is replaced (None: removed)."""
        def setup(f, t):
            load_model(TINY_CONFIG).save_pretrained(t / "pretrained")
            (t / "pretrained" / "config.json").unlink()
            if config_json is not None:
                config = {"format": "vidtwin", "format_version": 1,
                          "autoencoder": load_model(TINY_CONFIG).config.to_dict(), **config_json}
                (t / "pretrained" / "config.json").write_text(json.dumps(config))
            return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--ckpt", t / "pretrained",
                    "--quiet"]
        return setup

    def official_config_with_a_word(f, t):
        text = OFFICIAL_CONFIG.read_text().replace("depth: 2", "depth: two", 1)
        (t / "official.yaml").write_text(text)
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--config", t / "official.yaml",
                "--ckpt", f / "tiny.pt", "--quiet"]

    def non_utf8_csv(f, t):
        (t / "list.csv").write_bytes("path\nvid\xe9o.mp4\n".encode("latin-1"))
        return ["evaluate", "--input", t / "list.csv", "--output", t / "eval", "--lpips", "off", *model_args(f)]

    def existing_reports(f, t):
        (t / "eval").mkdir()
        (t / "eval" / "metrics.csv").write_text("an earlier evaluation")
        return ["evaluate", "--input", f / "videos", "--output", t / "eval", "--lpips", "off", *model_args(f)]

    def text_file_as_lpips_weights(f, t):
        return ["evaluate", "--input", f / "videos", "--output", t / "eval", "--lpips-weights", f / "notes.txt",
                *model_args(f)]

    dataset = lambda *extra: lambda f, t: ["encode-dataset", "--output", t / "latents", *dataset_args(f), *extra]  # noqa: E731

    def dataset_csv(text: bytes, *extra):
        def setup(f, t):
            (t / "list.csv").write_bytes(text)
            return dataset("--input", t / "list.csv", "--data-dir", f, *extra)(f, t)
        return setup

    def dataset_of_other_sampling(f, t):
        (t / "latents").mkdir()
        manifest = json.loads((f / "dataset" / "manifest.json").read_text())
        manifest["identity"]["sampling"]["sample_fps"] = 5.0
        (t / "latents" / "manifest.json").write_text(json.dumps(manifest))
        return dataset("--input", f / "videos")(f, t)

    def dataset_into_a_folder_of_other_files(f, t):
        (t / "latents").mkdir()
        (t / "latents" / "notes.txt").write_text("mine")
        return dataset("--input", f / "videos")(f, t)

    def dataset_with_a_truncated_shard(f, t):
        shutil.copytree(f / "dataset", t / "latents")
        shard = sorted((t / "latents" / "shards").iterdir())[0]
        shard.write_bytes(shard.read_bytes()[:100])
        return dataset("--input", f / "videos", "--num-workers", "0")(f, t)

    def dataset_under_a_file(f, t):
        (t / "a_file").write_text("x")
        return ["encode-dataset", "--input", f / "videos", "--output", t / "a_file" / "latents", *dataset_args(f)]

    def decode_dataset(source="dataset", **changes):
        return lambda f, t: ["decode", "--latents", tampered_dataset(f, t / "latents", source, **changes), "--video", "clip.mp4",
                             "--output", t / "out.mp4", *model_args(f)]

    def resume_dataset(**changes):
        return lambda f, t: dataset("--input", f / "videos")(f, t) if tampered_dataset(f, t / "latents", **changes) else None

    def set_tensor_of_shard(name, make):
        return lambda tensors: tensors.update({name: make(tensors[name])})

    def drop_identity(manifest):
        del manifest["identity"]

    def edit_input_size(manifest):
        manifest["identity"]["sampling"]["input_size"] = [8, 64]

    def dataset_being_written(f, t):
        shutil.copytree(f / "dataset", t / "latents")
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": 0}  # a live process: this one
        (t / "latents" / ".encode-dataset.lock").write_text(json.dumps(holder))
        return dataset("--input", f / "videos")(f, t)

    fvd = lambda *extra: lambda f, t: ["fvd", "--fake", f / "videos", "--device", "cpu", "--quiet", *extra]  # noqa: E731
    i3d = lambda f: f / "fvd" / WEIGHTS_FILENAME  # noqa: E731

    def existing_fvd_report(f, t):
        (t / "fvd.json").write_text("an earlier report")
        return fvd("--real", f / "videos", "--fvd-weights", i3d(f), "--output", t / "fvd.json")(f, t)

    return {
        # FVD: weights, sets, protocol and statistics are checked before any video is decoded
        "fvd weights file missing": (lambda f, t: fvd("--real", f / "videos", "--fvd-weights", t / "i3d.pt")(f, t),
                                     f"FVD needs the I3D weights {WEIGHTS_FILENAME}"),
        "fvd text file as weights": (lambda f, t: fvd("--real", f / "videos", "--fvd-weights", f / "notes.txt")(f, t),
                                     "are not a readable PyTorch state dict"),
        "fvd VidTwin checkpoint as weights": (lambda f, t: fvd("--real", f / "videos", "--fvd-weights", f / "tiny.pt")(f, t),
                                              "do not fit the I3D network"),
        "fvd set of one clip": (lambda f, t: fvd("--real", f / "videos", "--fvd-weights", i3d(f), "--frames", "9")(f, t),
                                "gives 1 clip(s); FVD fits a Gaussian to each set and needs at least 2"),
        "fvd videos shorter than a clip": (lambda f, t: fvd("--real", f / "videos", "--fvd-weights", i3d(f))(f, t),
                                           "has 10 frames, fewer than the 16"),
        "fvd --frames 4": (lambda f, t: fvd("--real", f / "videos", "--frames", "4")(f, t), "--frames must be >= 9"),
        "fvd existing report without --overwrite": (existing_fvd_report, "already exists; pass --overwrite"),
        "fvd --real-stats of another protocol": (
            lambda f, t: fvd("--real-stats", f / "fvd" / "real_12_frames.safetensors", "--fvd-weights", i3d(f))(f, t),
            "was computed with frames_per_clip 12, this run uses 16"),
        "fvd text file as --real-stats": (lambda f, t: fvd("--real-stats", f / "notes.txt", "--fvd-weights", i3d(f))(f, t),
                                          "is not a statistics file"),
        "fvd --save-real-stats with --real-stats": (
            lambda f, t: fvd("--real-stats", f / "notes.txt", "--save-real-stats", t / "s.safetensors")(f, t),
            "with --real-stats there is nothing new to save"),
        "evaluate --fvd-frames 8": (
            lambda f, t: ["evaluate", "--input", f / "videos", "--output", t / "eval", "--lpips", "off", "--fvd",
                          "--fvd-frames", "8", *model_args(f)], "--fvd-frames must be >= 9"),
        "evaluate --fvd on videos shorter than a clip": (
            lambda f, t: ["evaluate", "--input", f / "videos", "--output", t / "eval", "--lpips", "off", "--fvd",
                          "--fvd-weights", i3d(f), *model_args(f)], "--fvd: video"),
        # datasets: a reader trusts nothing it reads
        "decode a dataset with a shard of another dataset": (
            lambda f, t: ["decode", "--latents", swap_first_shard(f, t / "latents"), "--video", "clip.mp4",
                          "--output", t / "out.mp4", *model_args(f)], "belongs to another latent dataset"),
        "decode a dataset with a float16 shard": (
            decode_dataset(shard=set_tensor_of_shard("structure", lambda x: x.half())), "structure is F16, not F32"),
        "decode a dataset with a wrongly shaped shard": (
            decode_dataset(shard=set_tensor_of_shard("dynamics_y", lambda x: x[..., :-1].contiguous())), "dynamics_y has shape"),
        "decode a dataset with NaN latents": (
            decode_dataset(shard=set_tensor_of_shard("dynamics_x", lambda x: x.index_fill(0, torch.tensor([1]), float("nan")))),
            "dynamics_x of row 1 holds NaN or infinite values"),
        "decode a token dataset with tokens outside the codebook": (
            decode_dataset("token_dataset", shard=set_tensor_of_shard("structure", lambda x: x.int().add(1000).to(x.dtype))),
            "structure of row 0 holds tokens outside the codebook"),
        "decode a dataset whose index names ../..": (
            decode_dataset(index_shards=lambda names: ["../../" + names[0]]), "is not a file of its shards/ folder"),
        "decode a dataset whose index names /etc/passwd": (
            decode_dataset(index_shards=lambda names: ["/etc/passwd"]), "is not a file of its shards/ folder"),
        "decode a dataset whose manifest has no identity": (decode_dataset(manifest=drop_identity), "has no identity"),
        "decode a dataset with an edited sampling.input_size": (decode_dataset(manifest=edit_input_size),
                                                                "sampling.input_size is [8, 64]"),
        "encode-dataset resuming a manifest without identity": (resume_dataset(manifest=drop_identity), "has no identity"),
        "encode-dataset resuming an edited sampling.input_size": (resume_dataset(manifest=edit_input_size),
                                                                  "sampling.input_size is [8, 64]"),
        "encode-dataset resuming over a shard of another dataset": (
            lambda f, t: dataset("--input", f / "videos")(f, t) if swap_first_shard(f, t / "latents") else None,
            "belongs to another latent dataset"),
        "encode-dataset into a folder another job is writing": (dataset_being_written,
                                                                f"is being written by another encode-dataset job (pid {os.getpid()}"),
        "encode-dataset --devices 0": (lambda f, t: dataset("--input", f / "videos", "--devices", "0")(f, t), "--devices must be"),
        "encode-dataset --devices abc": (lambda f, t: dataset("--input", f / "videos", "--devices", "abc")(f, t), "--devices must be"),
        "encode-dataset --num-nodes 2 without a launcher": (
            lambda f, t: dataset("--input", f / "videos", "--num-nodes", "2")(f, t), "--num-nodes 2 needs a launcher"),
        # encode-dataset: bad input before any process starts, and nothing created
        "encode-dataset missing input": (dataset("--input", "/no/such/folder"), "does not exist"),
        "encode-dataset folder without videos": (lambda f, t: dataset("--input", (t / "empty").mkdir() or t / "empty")(f, t),
                                                 "contains no video files"),
        "encode-dataset CSV without a videos column": (dataset_csv(b"path\nclip.mp4\n"), "no 'videos' column"),
        "encode-dataset non-UTF-8 CSV": (dataset_csv("videos\nvid\xe9o.mp4\n".encode("latin-1")), "is not a UTF-8"),
        "encode-dataset unwritable output": (dataset_under_a_file, "cannot write --output"),
        "encode-dataset mismatched manifest": (dataset_of_other_sampling, "made with another"),
        "encode-dataset into a folder of other files": (dataset_into_a_folder_of_other_files, "already holds other files"),
        "encode-dataset resuming over a truncated shard": (dataset_with_a_truncated_shard, "is unreadable"),
        "encode-dataset --shard-size 0": (dataset("--input", "/no/such/folder", "--shard-size", "0"), "--shard-size must be >= 1"),
        "decode a dataset without --video": (
            lambda f, t: ["decode", "--latents", f / "dataset", "--output", t / "out.mp4", *model_args(f)], "pick one with --video"),
        # data loss: an output that is an input
        "reconstruct output is the input": (
            lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", f / "clip.mp4", "--overwrite", *model_args(f)],
            "is the input"),
        "output is the input spelled differently": (same_file_spelled_differently, "is the input"),
        "output is a symlink to the input": (symlink_to_input, "is the input"),
        "cross output is the dynamics video": (
            lambda f, t: ["cross", "--structure", f / "clip.safetensors", "--dynamics", f / "clip.mp4",
                          "--output", f / "clip.mp4", "--overwrite", *model_args(f)], "is the input"),
        "cross output is the structure video": (
            lambda f, t: ["cross", "--structure", f / "clip.mp4", "--dynamics", f / "clip.mp4",
                          "--output", f / "clip.mp4", *model_args(f)], "is the input"),
        "an existing file without --overwrite": (existing_output, "already exists; pass --overwrite"),
        "an output another run is writing": (output_being_written, "is being written by another run (pid"),
        "directory output is the input folder": (output_folder_is_input_folder, "is the input folder"),
        "existing reports without --overwrite": (existing_reports, "already exists; pass --overwrite"),
        # half-done work
        "cross --side-by-side with a latent file": (
            lambda f, t: ["cross", "--structure", f / "clip.safetensors", "--dynamics", f / "clip.mp4", "--side-by-side",
                          "--output", t / "out.mp4", *model_args(f)], "needs --structure and --dynamics to be videos"),
        # output kinds
        "webm output": (lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.webm", *model_args(f)],
                        "cannot hold H.264"),
        "gif output": (lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.gif", *model_args(f)],
                       "cannot hold H.264"),
        "decode to a text file": (lambda f, t: ["decode", "--latents", f / "clip.safetensors", "--output", t / "x.txt",
                                                *model_args(f)], "is not a video file name"),
        "cross to a text file": (lambda f, t: ["cross", "--structure", f / "clip.mp4", "--dynamics", f / "clip.mp4",
                                               "--output", t / "x.txt", *model_args(f)], "is not a video file name"),
        # tampered latent files
        "fp16 latents": (tamper(set_tensor("structure", lambda x: x.half())), "structure is torch.float16"),
        "int32 latents": (tamper(set_tensor("dynamics_x", lambda x: x.int())), "dynamics_x is torch.int32"),
        "wrongly shaped latents": (tamper(set_tensor("dynamics_y", lambda x: x[..., :-1].contiguous())), "dynamics_y has shape"),
        "more clips than the metadata": (tamper(set_tensor("structure", lambda x: torch.cat([x, x]))), "structure has shape"),
        "zero frames": (tamper(set_meta(num_frames=0)), "num_frames is 0"),
        "negative frames": (tamper(set_meta(num_frames=-3)), "num_frames is -3"),
        "zero fps": (tamper(set_meta(fps=0.0)), "fps is 0.0"),
        "nan fps": (tamper(set_meta(fps="nan")), "fps is nan"),
        "nan latents": (tamper(set_tensor("structure", lambda x: x.index_fill(0, torch.tensor([0]), float("nan")))),
                        "NaN or infinite"),
        "tile grid of a resized file": (
            tamper(set_meta(tile_grid=json.dumps({"height": 48, "width": 64, "tile_height": 64, "tile_width": 64,
                                                  "overlap": 16, "starts_y": [0], "starts_x": [0]}))),
            "holds a tile grid but spatial is resize"),
        # tampered FSQ token files: the damaged tensor is named
        "float tokens": (tamper_tokens(set_tensor("dynamics_x", lambda x: x.float())),
                         "dynamics_x is torch.float32, not integer FSQ tokens"),
        "bool tokens": (tamper_tokens(set_tensor("structure", lambda x: x.int() > 0)), "structure is torch.bool, not integer FSQ tokens"),
        "tokens outside the codebook": (tamper_tokens(set_tensor("dynamics_y", lambda x: x.int() + 1000)),
                                        "dynamics_y holds tokens in"),
        "tokens without a tile axis": (tamper_tokens(set_tensor("structure", lambda x: x.flatten().contiguous())),
                                       "structure has shape"),
        "a folder as --latents": (latent_folder, "is a folder but not a latent dataset"),
        "latents of other weights of the same config": (
            lambda f, t: ["decode", "--latents", f / "clip.safetensors", "--output", t / "out.mp4", "--config", TINY_CONFIG,
                          "--ckpt", f / "tiny_other_seed.pt", "--quiet"], "were encoded with other weights"),
        # not a checkpoint, bad configs, bad numbers
        "text file as --ckpt": (
            lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--config", TINY_CONFIG,
                          "--ckpt", f / "notes.txt", "--quiet"], "is not a readable PyTorch checkpoint"),
        "damaged save_pretrained weights": (corrupt_pretrained, "is not a readable safetensors file"),
        "save_pretrained folder without config.json": (pretrained_folder(None),
                                                       "has no config.json: it is not a save_pretrained folder"),
        "config.json of another library": (pretrained_folder({"format": "diffusers"}),
                                           "its format is 'diffusers', not 'vidtwin'"),
        "config.json of a newer format version": (pretrained_folder({"format_version": 2}),
                                                  "has format_version 2; this code reads versions up to 1"),
        "YAML syntax error": (
            lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--config", f / "bad.yaml",
                          "--ckpt", f / "tiny.pt", "--quiet"], "cannot read config"),
        "official config with a word for a number": (official_config_with_a_word,
                                                     "encoder_config.params.depth must be a whole number"),
        "--sample-fps nan": (lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4",
                                           "--sample-fps", "nan", *model_args(f)], "--sample-fps must be a positive number"),
        "non-UTF-8 CSV": (non_utf8_csv, "is not UTF-8 text"),
        "text file as --lpips-weights": (text_file_as_lpips_weights, "cannot read LPIPS weights"),
        "unreadable video": (lambda f, t: ["reconstruct", "--input", f / "broken.mp4", "--output", t / "out.mp4",
                                           *model_args(f)], "not a readable video file"),
    }


def _generator_folder(f, t, name="gen", num_classes=2, autoencoder=True):
    """A save_pretrained generator of configs/tiny.yaml's latents (classes cat, dog), recording tiny.pt."""
    from vidtwin.generation import GeneratorConfig, LatentGenerator

    names = ["cat", "dog"][:num_classes] or None
    shapes = {name: list(shape) for name, shape in load_model(TINY_CONFIG).config.latent_shapes().items()}
    generator = LatentGenerator(GeneratorConfig(num_classes=num_classes, class_names=names, latent_shapes=shapes))
    generator.autoencoder_files = {"config": str(TINY_CONFIG), "ckpt": str(f / "tiny.pt")} if autoencoder else None
    generator.save_pretrained(t / name)
    return t / name


def _generation_cases():
    """id -> (setup, message) of `generate` and of encode-dataset's label options."""
    def generate(*extra, **folder):
        return lambda f, t: ["generate", "--generator", _generator_folder(f, t, **folder), "--output", t / "samples",
                             "--steps", "1", "--device", "cpu", "--quiet", *extra]

    def other_autoencoder(f, t):
        other = t / "frames16.yaml"
        other.write_text(TINY_CONFIG.read_text().replace(f"input_size: [{TINY_FRAMES}, 64, 64]", "input_size: [16, 64, 64]"))
        torch.save(load_model(other).state_dict(), t / "frames16.pt")
        return generate("--all-classes", "--config", other, "--ckpt", t / "frames16.pt")(f, t)

    def existing_sample(f, t):
        (t / "samples").mkdir()
        (t / "samples" / "cat_000.mp4").write_bytes(b"an earlier sample")
        return generate("--class", "cat")(f, t)

    def output_is_a_file(f, t):
        (t / "samples").write_bytes(b"not a folder")
        return generate("--all-classes")(f, t)

    def autoencoder_as_generator(f, t):
        load_model(TINY_CONFIG, f / "tiny.pt").save_pretrained(t / "ae")
        return ["generate", "--generator", t / "ae", "--all-classes", "--output", t / "samples", "--quiet"]

    clips = -(-10 // TINY_FRAMES)  # clip.mp4: 10 frames in clips of tiny.yaml's, the last one padded
    too_many_actions = "RLUDR"[:clips + 1]

    def meta_csv_input(csv_text, *options, input_csv=True):
        def setup(f, t):
            (t / "meta.csv").write_text(csv_text)
            source = t / "meta.csv" if input_csv else f / "videos"
            return ["encode-dataset", "--input", source, "--data-dir", f / "videos", "--output", t / "latents",
                    *dataset_args(f), *options] if input_csv else [
                    "encode-dataset", "--input", source, "--output", t / "latents", *dataset_args(f), *options]
        return setup

    return {
        "generate: unknown class": (generate("--class", "bird"), "unknown class 'bird'; known classes: cat, dog"),
        "generate: nothing asked for": (generate(), "say what to generate: --class NAME"),
        "generate: --class and --all-classes": (generate("--class", "cat", "--all-classes"),
                                                "give one of --class, --all-classes and --unconditional"),
        "generate: a class of an unconditional generator": (generate("--class", "cat", num_classes=0),
                                                            "this generator is unconditional"),
        "generate: latents of another autoencoder": (other_autoencoder,
                                                     "the generator makes latents the autoencoder cannot decode"),
        "generate: no autoencoder recorded or given": (generate("--all-classes", autoencoder=False),
                                                       "this generator records no autoencoder"),
        "generate: --config without --ckpt": (generate("--all-classes", "--config", TINY_CONFIG), "give its weights with --ckpt"),
        "generate: missing generator": (lambda f, t: ["generate", "--generator", t / "nowhere", "--all-classes",
                                                      "--output", t / "samples"], "does not exist"),
        "generate: an autoencoder's folder as --generator": (autoencoder_as_generator, "is an autoencoder, not a generator"),
        "generate: --num 0": (generate("--all-classes", "--num", "0"), "--num must be >= 1"),
        "generate: --steps 0": (generate("--all-classes", "--steps", "0"), "--steps must be >= 1"),
        "generate: existing sample": (existing_sample, "already exists; pass --overwrite"),
        "generate: --output is a file": (output_is_a_file, "is a file; give a folder"),
        "labels: --label-column of a folder input": (meta_csv_input("", "--label-column", "kind", input_csv=False),
                                                     "--label-column reads a column of a meta CSV"),
        "labels: --labels-from-folders of a CSV": (meta_csv_input("videos\nclip.mp4\n", "--labels-from-folders"),
                                                   "--labels-from-folders takes classes from the sub-folders"),
        "labels: both options": (meta_csv_input("videos\nclip.mp4\n", "--labels-from-folders", "--label-column", "kind"),
                                 "not both"),
        "labels: a column the CSV lacks": (meta_csv_input("videos,kind\nclip.mp4,a\n", "--label-column", "class"),
                                           "--label-column 'class' is not a column of"),
        "labels: a video without a class": (meta_csv_input("videos,kind\nclip.mp4,\n", "--label-column", "kind"),
                                            "row 2 (clip.mp4) has no value in its 'kind' column"),
        "labels: a video with two classes": (meta_csv_input("videos,kind\nclip.mp4,a\nclip.mp4,b\n", "--label-column", "kind"),
                                             "lists clip.mp4 twice, with the classes 'a' and 'b'"),
        "labels: a video outside any class folder": (meta_csv_input("", "--labels-from-folders", input_csv=False),
                                                     "clip.mp4 lies directly in it"),
        "actions: --actions-column of a folder input": (meta_csv_input("", "--actions-column", "moves", input_csv=False),
                                                        "--actions-column reads a column of a meta CSV"),
        "actions: a column the CSV lacks": (meta_csv_input("videos,moves\nclip.mp4,RL\n", "--actions-column", "actions"),
                                            "--actions-column 'actions' is not a column of"),
        "actions: a video without actions": (meta_csv_input("videos,moves\nclip.mp4,\n", "--actions-column", "moves"),
                                             "row 2 (clip.mp4) has no actions in its 'moves' column"),
        "actions: a letter outside A-Z, a-z, 0-9": (meta_csv_input("videos,moves\nclip.mp4,R-\n", "--actions-column", "moves"),
                                                    "has the action '-' in 'R-'; an action is one letter"),
        "actions: a video with two action strings": (
            meta_csv_input("videos,moves\nclip.mp4,RL\nclip.mp4,LR\n", "--actions-column", "moves"),
            "lists clip.mp4 twice, with the actions 'RL' and 'LR'"),
        "actions: more letters than clips": (
            meta_csv_input(f"videos,moves\nclip.mp4,{too_many_actions}\n", "--actions-column", "moves"),
            f"clip.mp4 has {clips + 1} actions ({too_many_actions}) but {clips} clips are encoded from it"),
    }


INFERENCE_CASES = {**_inference_cases(), **_generation_cases()}


@pytest.mark.parametrize("case", list(INFERENCE_CASES))
def test_inference_user_errors(files, tmp_path, capsys, case):
    setup, message = INFERENCE_CASES[case]
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    with claims:
        argv = [str(a) for a in setup(files, tmp_path)]
        written_before = sorted(p.name for p in tmp_path.rglob("*"))
        code = inference_main(argv)
        written_after = sorted(p.name for p in tmp_path.rglob("*"))
    err = capsys.readouterr().err
    assert_one_line(code, err, "vidtwin", message)
    assert "Errno" not in err and "weights_only" not in err
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before  # no input touched
    assert written_after == written_before  # nothing written


@pytest.mark.parametrize("outside", ["../../etc/passwd", "/etc/passwd"])
def test_an_index_naming_files_outside_the_dataset_asks_to_delete_nothing(files, tmp_path, capsys, outside):
    dataset = tampered_dataset(files, tmp_path / "latents", index_shards=lambda names: [outside])
    code = inference_main(["decode", "--latents", str(dataset), "--video", "clip.mp4", "--output", str(tmp_path / "o.mp4"),
                           *model_args(files)])
    err = capsys.readouterr().err
    assert_one_line(code, err, "vidtwin", "the index is damaged")
    assert "delete" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_encode_dataset_on_gpus_of_a_machine_without_one(files, tmp_path, capsys):
    code = inference_main(["encode-dataset", "--input", str(files / "videos"), "--output", str(tmp_path / "latents"),
                           "--config", str(TINY_CONFIG), "--ckpt", str(files / "tiny.pt"), "--accelerator", "gpu", "--quiet"])
    assert_one_line(code, capsys.readouterr().err, "vidtwin", "--accelerator gpu: no GPU is available here")
    assert not (tmp_path / "latents").exists()  # no empty folder left behind


def test_latents_of_other_weights_decode_when_allowed(files, tmp_path, capsys):
    code = inference_main(["decode", "--latents", str(files / "clip.safetensors"), "--output", str(tmp_path / "o.mp4"),
                           "--config", str(TINY_CONFIG), "--ckpt", str(files / "tiny_other_seed.pt"), "--quiet",
                           "--allow-other-weights"])
    assert code == 0, capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(files, tmp_path, capsys):
    code = inference_main(["reconstruct", "--input", str(files / "broken.mp4"), "--output", str(tmp_path / "o.mp4"),
                           *model_args(files), "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("vidtwin reconstruct: error:")


def test_a_bug_is_not_reported_as_a_user_error(files, tmp_path, capsys, monkeypatch):
    import vidtwin.cli.encode as cli

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")  # a plain ValueError is never taken for bad input

    monkeypatch.setattr(cli, "encode_video", broken)
    code = inference_main(["encode", "--input", str(files / "clip.mp4"), "--output", str(tmp_path / "x.safetensors"),
                           *model_args(files)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err
    assert "vidtwin encode: internal error: ValueError: an internal inconsistency" in err
    assert not [line for line in err.splitlines() if line.startswith("vidtwin encode: error:")]


def test_fvd_without_weights_in_any_cache_names_the_file_and_downloads_nothing(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code = inference_main(["fvd", "--real", str(files / "videos"), "--fake", str(files / "videos"), "--quiet"])
    err = capsys.readouterr().err
    assert_one_line(code, err, "vidtwin", f"FVD needs the I3D weights {WEIGHTS_FILENAME}, published at https://")
    assert "nothing is downloaded" in err and not (tmp_path / "torch").exists() and not (tmp_path / "hub").exists()


def test_a_too_small_video_fails_alone_in_evaluate(files, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes((files / "clip.mp4").read_bytes())
    write_video(videos / "tiny.mp4", torch.zeros(3, 2, 2, 3, dtype=torch.uint8), fps=5.0)
    code = inference_main(["evaluate", "--input", str(videos), "--output", str(tmp_path / "eval"), "--spatial", "tile",
                           "--lpips", "off", *model_args(files)])
    err = capsys.readouterr().err
    assert_one_line(code, err, "vidtwin", "1 of 2 videos failed", expected_code=1)
    assert "smaller than SSIM's 11x11 window" in err
    assert (tmp_path / "eval" / "metrics.csv").read_text().count("\n") == 3  # header, clip, tiny (with its error)


# ------------------------------------------------------------------------------- full disk
def test_full_disk_in_encode_and_evaluate(files, full_disk, capsys):
    code = inference_main(["encode", "--input", str(files / "clip.mp4"), "--output", str(full_disk / "clip.safetensors"),
                           *model_args(files)])
    assert_one_line(code, capsys.readouterr().err, "vidtwin", "No space left on device")
    # evaluate reports a full disk after all the compute in one line, and leaves no partial report set
    code = inference_main(["evaluate", "--input", str(files / "videos"), "--output", str(full_disk / "eval"),
                           "--lpips", "off", "--plots", *model_args(files)])
    assert_one_line(code, capsys.readouterr().err, "vidtwin", "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# ------------------------------------------------------------------------------- train.py
def _train_cases():
    def existing_run(t):  # a run with a complete checkpoint: there is something to resume
        (t / "run" / "checkpoints").mkdir(parents=True)
        (t / "run" / "config.yaml").write_text("model: {}\n")
        torch.save({"vidtwin_training": {"train_step": 1}, "state_dict": {}}, t / "run" / "checkpoints" / "last.ckpt")
        return ["--name", "run", "--base", *tiny_config_files()]

    def resume_a_video(t):
        (t / "clip.mp4").write_bytes(b"")
        return ["--resume", t / "clip.mp4"]

    def truncated_resume_checkpoint(t):
        (t / "run" / "checkpoints").mkdir(parents=True)
        (t / "run" / "config.yaml").write_text("model: {}\n")
        (t / "run" / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04")
        return ["--resume", t / "run"]

    def yaml_syntax_error(t):
        (t / "bad.yaml").write_text("model: [unclosed\n")
        return ["--base", t / "bad.yaml"]

    def foreign_target(t):  # a config from elsewhere that would run a command
        (t / "evil.yaml").write_text(f"model: {{target: os.system, params: {{command: 'touch {t}/ran'}}}}\n")
        return ["--base", *tiny_config_files(), t / "evil.yaml"]

    def foreign_target_in_a_run(t):  # a run directory copied from someone else, resumed
        (t / "run" / "checkpoints").mkdir(parents=True)
        config = OmegaConf.load(TINY_CONFIG)
        config.lightning.callbacks.x = {"target": "os.system", "params": {"command": f"touch {t}/ran"}}
        OmegaConf.save(config, t / "run" / "config.yaml")
        torch.save({"vidtwin_training": {"train_step": 1}, "state_dict": {}}, t / "run" / "checkpoints" / "last.ckpt")
        return ["--resume", t / "run"]

    def resume_into_a_changed_model(t):
        assert train_main(["--logdir", str(t), "--name", "run", "--base", *tiny_config_files(),
                           *micro_overrides("lightning.trainer.max_steps=1")]) == 0
        return ["--resume", t / "run", "model.params.autoencoder.mlp_ratio=2.0"]

    return {
        "target outside the allowed packages": (foreign_target, "model.target: 'os.system' is outside the packages"),
        "target outside the allowed packages, in a resumed run": (
            foreign_target_in_a_run, "lightning.callbacks.x.target: 'os.system' is outside the packages"),
        "callback that is not a Callback": (
            lambda t: ["--base", *tiny_config_files(), "lightning.callbacks.x={target: torch.nn.Identity}"],
            "lightning.callbacks.x: torch.nn.Identity is not a Lightning Callback"),
        "model that is not a TrainingModule": (
            lambda t: ["--base", *tiny_config_files(), "model.target=torch.nn.Identity"],
            "model: torch.nn.Identity is not a vidtwin.training.TrainingModule"),
        "resume into a changed model": (
            resume_into_a_changed_model, "does not load into the changed config (model.params.autoencoder.mlp_ratio"),
        "existing run": (existing_run, "already holds a run; continue it with `vidtwin train --resume"),
        "resume a video": (resume_a_video, "give a run directory or a .ckpt"),
        "truncated resume checkpoint": (truncated_resume_checkpoint, "none of its 1 .ckpt files is readable"),
        "YAML syntax error": (yaml_syntax_error, "cannot read config"),
        "max_steps is a word": (lambda t: ["--base", *tiny_config_files(), "lightning.trainer.max_steps=abc"],
                                "lightning.trainer.max_steps must be a whole number"),
        "a path as --name": (lambda t: ["--name", "a/b", "--base", *tiny_config_files()], "must be a plain folder name"),
        "resume and overwrite": (lambda t: ["--resume", t, "--overwrite"], "give one of them"),
    }


TRAIN_CASES = _train_cases()


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_user_errors(tmp_path, capsys, case):
    setup, message = TRAIN_CASES[case]
    argv = [str(a) for a in setup(tmp_path)]
    written_before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = train_main(["--logdir", str(tmp_path), *argv, *micro_overrides()])
    assert_one_line(code, capsys.readouterr().err, "vidtwin train", message)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == written_before


def test_train_option_that_the_augmented_demo_clips_do_not_take(tmp_path, capsys):
    # A row of the table above that cannot use its micro model: that trains on a video file, and
    # this error concerns the quick start's own demo data.
    code = train_main(["--logdir", str(tmp_path), "--base", *tiny_config_files(), "data.params.train.sample_fps=8"])
    assert_one_line(code, capsys.readouterr().err, "vidtwin train",
                    "data.params.train: sample_fps do not apply to the augmented demo clips (demo_augmentation)")
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_read_only_log_directory(tmp_path, capsys):
    with small_tmpfs(tmp_path / "logs", "1m", read_only=True) as logs:
        code = train_main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
        assert_one_line(code, capsys.readouterr().err, "vidtwin train", "Read-only file system")


def test_train_on_an_immutable_log_directory(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    with immutable_folder(logs):
        code = train_main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
        assert_one_line(code, capsys.readouterr().err, "vidtwin train", "Operation not permitted")


def test_encode_dataset_into_an_immutable_folder(files, tmp_path, capsys):
    # Immutable, because root (the test machines' user) writes into read-only folders anyway.
    shutil.copytree(files / "dataset", tmp_path / "latents")
    with immutable_folder(tmp_path / "latents"):
        for output in (tmp_path / "latents", tmp_path / "latents" / "new"):  # resuming a dataset, and a new one
            code = inference_main(["encode-dataset", "--input", str(files / "videos"), "--output", str(output),
                                   *dataset_args(files)])
            assert_one_line(code, capsys.readouterr().err, "vidtwin", "Operation not permitted")


# ------------------------------------------------------------------------------- the other commands, benchmarks
def _prog(name):
    return name if name.endswith(".py") else f"vidtwin {name}"


def assert_script_rows_in_process(cases, capsys):
    """Each (command or benchmark script, args, message) row run in this process under the CLI convention (a
    subprocess per row costs seconds of imports): one error line, exit 2."""
    import runpy

    from vidtwin.cli import main as vidtwin_main
    from vidtwin.cli.convention import run_main

    for name, args, message in cases:
        args = [str(a) for a in args]
        try:
            if name.endswith(".py"):
                main = runpy.run_path(str(REPO / "scripts" / name))["main"]
                code = run_main(name, lambda: main(args))
            else:
                code = vidtwin_main([*name.split(), *args])
        except SystemExit as stop:  # argparse's own errors (an unknown choice) exit 2 from inside main
            code = stop.code
        assert_one_line(code, capsys.readouterr().err, _prog(name), message)


def test_script_user_errors(files, tmp_path, capsys):
    cases = [
        ("convert", ["--config", TINY_CONFIG, "--ckpt", files / "notes.txt", "--output", tmp_path / "a"],
         "is not a readable PyTorch checkpoint"),
        ("convert", ["--config", files / "bad.yaml", "--ckpt", files / "tiny.pt", "--output", tmp_path / "a"],
         "cannot read config"),
        ("compression-report", [files / "bad.yaml"], "cannot read config"),
        ("compression-report", [TINY_CONFIG, "--generator", "huge"], "unknown --generator 'huge'"),
        ("make-meta", [tmp_path / "nowhere"], "is not a folder"),
        ("benchmark.py", ["--config", files / "bad.yaml"], "cannot read config"),
        ("benchmark_train.py", ["--base", files / "bad.yaml"], "cannot read config"),
    ]
    # In this process; real processes show the exit status and stderr the shell sees for convert
    # (test_hub_failure_is_a_clear_error) and make-meta (test_make_meta_cli_checks_and_drops_unreadable).
    assert_script_rows_in_process(cases, capsys)
    assert not (tmp_path / "a").exists()


def test_moving_digits_script_user_errors(tmp_path, capsys):
    data = tmp_path / "digits"
    assert inference_main(["demo", "digits", str(data), "--train-per-class", "1", "--val-per-class", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "settings_only").mkdir()
    shutil.copy(data / "digits.json", tmp_path / "settings_only" / "digits.json")
    (tmp_path / "no_clips").mkdir()
    (tmp_path / "notes.txt").write_text("not clips")
    (tmp_path / "other.csv").write_text("videos,caption\na.mp4,x\n")
    new = tmp_path / "new"
    cases = [
        ("demo digits", [new, "--digit-size", 4], "--digit-size must be between 8 and the frame size 64"),
        ("demo digits", [new, "--speed", 9], "travels 135 px, more than the 32 px the frame leaves it"),
        ("demo digits", [new, "--game", "--speed", 20], "does not fit in the frame"),
        ("demo digits", [new, "--train-per-class", 0], "must all be >= 1"),
        ("demo digits", [new, "--two-speed", "--val-per-class", 0], "must all be >= 1"),
        ("demo digits", [new, "--speed", 0], "must all be >= 1"),
        ("demo digits", [new, "--frames", 0], "must all be >= 1"),
        ("demo digits", [new, "--digit-size", 0], "--digit-size must be between 8 and the frame size 64"),
        ("demo digits", [new, "--fps", "nan"], "argument --fps: must be a finite number above 0, got nan"),
        ("demo digits", [data], "already holds files; pass --overwrite"),
        ("demo digits", [tmp_path / "notes.txt"], "exists and is not a folder"),
        ("demo check-generation", [tmp_path / "no_clips", "--data", data], "holds no clips named <digit>-<direction>_<index>.mp4"),
        ("demo check-generation", [tmp_path / "notes.txt", "--data", data], "is neither a folder of generated clips nor"),
        ("demo check-generation", [tmp_path / "other.csv", "--data", data], "is not a Moving Digits CSV"),
        ("demo check-generation", [data / "val.csv", "--data", tmp_path / "no_clips"], "has no digits.json"),
        ("demo check-generation", [data / "train.csv", "--data", tmp_path / "settings_only"], "has no val.csv for the ceiling"),
        ("demo check-generation", [data / "val.csv", "--data", data, "--config", "x.yaml"], "needs both --config and --ckpt"),
    ]
    assert_script_rows_in_process(cases, capsys)
    assert not new.exists()
    assert (tmp_path / "notes.txt").read_text() == "not clips"


def test_world_script_user_errors(files, tmp_path, capsys):
    from world_helpers import make_play_files

    play_files = make_play_files(tmp_path / "play")
    world, start = play_files / "world", play_files / "start.mp4"
    (tmp_path / "taken.mp4").write_bytes(b"a video made before")
    (tmp_path / "no_game").mkdir()
    out = tmp_path / "out.mp4"
    cases = [
        ("play", [world, "--start", start, "--actions", "RXR", "--output", out],
         "unknown action(s) 'X'; this model knows DLRU"),
        ("play", [world, "--start", play_files / "short.mp4", "--actions", "R", "--output", out],
         "has 5 frames, fewer than one clip of 8"),
        ("play", [world, "--start", play_files / "small.mp4", "--actions", "R", "--output", out],
         "is 64x48, but the autoencoder's clips are 64x64"),
        ("play", [world, "--start", start, "--actions", "R", "--output", out, "--config", TINY_CONFIG,
                     "--ckpt", files / "tiny.pt"], "has Gaussian (kl) latents, which have no tokens"),
        ("play", [world, "--start", start, "--actions", "R", "--output", tmp_path / "taken.mp4"],
         "exists; pass --overwrite to replace it"),
        ("play", [world, "--start", start, "--output", out], "give either --actions"),
        ("play", [tmp_path / "nowhere", "--start", start, "--actions", "R", "--output", out], "does not exist"),
        ("demo check-world", [world, "--data", tmp_path / "no_game"], "val.csv does not exist"),
    ]
    assert_script_rows_in_process(cases, capsys)
    assert not out.exists()
    assert (tmp_path / "taken.mp4").read_bytes() == b"a video made before"


def test_convert_checkpoint_refuses_to_replace_a_model_and_reports_a_full_disk(files, tmp_path, full_disk, capsys):
    from vidtwin.cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"a model saved before")
    code = main(["convert", "--config", str(TINY_CONFIG), "--ckpt", str(files / "tiny.pt"), "--output", str(tmp_path / "out")])
    assert_one_line(code, capsys.readouterr().err, "vidtwin convert", "pass --overwrite")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"a model saved before"
    code = main(["convert", "--config", str(TINY_CONFIG), "--ckpt", str(files / "tiny.pt"), "--output", str(full_disk / "m")])
    assert_one_line(code, capsys.readouterr().err, "vidtwin convert", "No space left on device")
    assert not any(p.name.startswith(".") for p in full_disk.rglob("*"))  # no temporary file left


def test_make_meta_on_a_full_disk_leaves_no_folder(files, full_disk, capsys):
    from vidtwin.cli import main

    output = full_disk / "new" / "sub" / "meta.csv"
    code = main(["make-meta", str(files / "videos"), "--output", str(output)])
    assert_one_line(code, capsys.readouterr().err, "vidtwin make-meta", "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_bug_in_train_py_is_not_reported_as_a_config_error(tmp_path, capsys, monkeypatch):
    import vidtwin.cli.train as cli

    def broken(*args, **kwargs):
        raise TypeError("an internal inconsistency")  # once reported as "a config error"

    monkeypatch.setattr(cli, "build_callbacks", broken)
    code = train_main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "vidtwin train: internal error: TypeError" in err
    assert not [line for line in err.splitlines() if line.startswith("vidtwin train: error:")]


def test_unknown_keys_of_an_official_config_are_named(tmp_path, caplog):
    text = OFFICIAL_CONFIG.read_text().replace("        depth: 2\n", "        depth: 2\n        depht: 3\n", 1)
    (tmp_path / "official.yaml").write_text(text)
    with caplog.at_level("WARNING", logger="vidtwin"):
        load_model(tmp_path / "official.yaml")
    assert "encoder_config.params has unknown setting(s) depht" in caplog.text
