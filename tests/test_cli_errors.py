"""The command-line convention of vidtwin/cli_utils.py, over every entry point's user errors.

Each row runs one entry point (train.py, inference.py, the scripts) on one bad input and checks
the rule: exit code 2, exactly one stderr line that starts ``PROG: error:`` and says what was
wrong, no traceback, and nothing written. Add a row whenever a new user error is found.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidtwin import load_model
from vidtwin.data.video_io import write_video
from vidtwin.inference.cli import main as inference_main
from vidtwin.training.cli import main as train_main

from _training_utils import micro_overrides, tiny_config_files
from conftest import OFFICIAL_CONFIG, REPO, TINY_CONFIG, small_tmpfs
from inference_helpers import one_torch_thread  # noqa: F401  (autouse fixture: one OpenMP thread)


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
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "bad.yaml").write_text("model: [unclosed\n")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


def model_args(root):
    return ["--config", str(TINY_CONFIG), "--ckpt", str(root / "tiny.pt"), "--device", "cpu", "--quiet"]


def dataset_args(root):
    return ["--config", str(TINY_CONFIG), "--ckpt", str(root / "tiny.pt"), "--accelerator", "cpu", "--quiet"]


def tampered_latents(files, target, change):
    """A copy of clip.safetensors with ``change(tensors, metadata)`` applied."""
    with safe_open(str(files / "clip.safetensors"), framework="pt") as reader:
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
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- inference.py
def _inference_cases():
    """id -> (setup(files, tmp) -> argv, expected message)."""
    decode = lambda latents: lambda f, t: ["decode", "--latents", latents(f, t), "--output", t / "out.mp4", *model_args(f)]  # noqa: E731
    tamper = lambda change: decode(lambda f, t: tampered_latents(f, t / "bad.safetensors", change))  # noqa: E731

    def same_file_spelled_differently(f, t):
        return ["reconstruct", "--input", f / "clip.mp4", "--output", f / "." / ".." / f.name / "clip.mp4", *model_args(f)]

    def symlink_to_input(f, t):
        (t / "link.mp4").symlink_to(f / "clip.mp4")
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "link.mp4", "--overwrite", *model_args(f)]

    def existing_output(f, t):
        (t / "out.mp4").write_bytes(b"somebody's file")
        return ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", *model_args(f)]

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

    return {
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
        "a folder as --latents": (latent_folder, "is a folder but not a latent dataset"),
        "latents of other weights of the same config": (
            lambda f, t: ["decode", "--latents", f / "clip.safetensors", "--output", t / "out.mp4", "--config", TINY_CONFIG,
                          "--ckpt", f / "tiny_other_seed.pt", "--quiet"], "were encoded with other weights"),
        # not a checkpoint, bad configs, bad numbers
        "text file as --ckpt": (
            lambda f, t: ["reconstruct", "--input", f / "clip.mp4", "--output", t / "out.mp4", "--config", TINY_CONFIG,
                          "--ckpt", f / "notes.txt", "--quiet"], "is not a readable PyTorch checkpoint"),
        "damaged save_pretrained weights": (corrupt_pretrained, "is not a readable safetensors file"),
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


INFERENCE_CASES = _inference_cases()


@pytest.mark.parametrize("case", list(INFERENCE_CASES))
def test_inference_user_errors(files, tmp_path, capsys, case):
    setup, message = INFERENCE_CASES[case]
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    argv = [str(a) for a in setup(files, tmp_path)]
    written_before = sorted(p.name for p in tmp_path.rglob("*"))
    code = inference_main(argv)
    err = capsys.readouterr().err
    assert_one_line(code, err, "inference.py", message)
    assert "Errno" not in err and "weights_only" not in err
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before  # no input touched
    assert sorted(p.name for p in tmp_path.rglob("*")) == written_before  # nothing written


def test_latents_of_other_weights_decode_when_allowed(files, tmp_path, capsys):
    code = inference_main(["decode", "--latents", str(files / "clip.safetensors"), "--output", str(tmp_path / "o.mp4"),
                           "--config", str(TINY_CONFIG), "--ckpt", str(files / "tiny_other_seed.pt"), "--quiet",
                           "--allow-other-weights"])
    assert code == 0, capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(files, tmp_path, capsys):
    code = inference_main(["reconstruct", "--input", str(files / "broken.mp4"), "--output", str(tmp_path / "o.mp4"),
                           *model_args(files), "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("inference.py: error:")


def test_a_bug_is_not_reported_as_a_user_error(files, tmp_path, capsys, monkeypatch):
    import vidtwin.inference.cli as cli

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")  # a plain ValueError is never taken for bad input

    monkeypatch.setattr(cli, "encode_video", broken)
    code = inference_main(["encode", "--input", str(files / "clip.mp4"), "--output", str(tmp_path / "x.safetensors"),
                           *model_args(files)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err
    assert "inference.py: internal error: ValueError: an internal inconsistency" in err
    assert not [line for line in err.splitlines() if line.startswith("inference.py: error:")]


def test_a_too_small_video_fails_alone_in_evaluate(files, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes((files / "clip.mp4").read_bytes())
    write_video(videos / "tiny.mp4", torch.zeros(3, 2, 2, 3, dtype=torch.uint8), fps=5.0)
    code = inference_main(["evaluate", "--input", str(videos), "--output", str(tmp_path / "eval"), "--spatial", "tile",
                           "--lpips", "off", *model_args(files)])
    err = capsys.readouterr().err
    assert_one_line(code, err, "inference.py", "1 of 2 videos failed", expected_code=1)
    assert "smaller than SSIM's 11x11 window" in err
    assert (tmp_path / "eval" / "metrics.csv").read_text().count("\n") == 3  # header, clip, tiny (with its error)


# ------------------------------------------------------------------------------- full disk
@pytest.fixture
def full_disk(tmp_path):
    """A full 1 MiB tmpfs: every write fails with ENOSPC, as on a full disk (needs mount rights)."""
    with small_tmpfs(tmp_path / "full", "1m") as folder:
        try:
            with open(folder / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass
        yield folder


def test_full_disk_in_encode_and_evaluate(files, full_disk, capsys):
    code = inference_main(["encode", "--input", str(files / "clip.mp4"), "--output", str(full_disk / "clip.safetensors"),
                           *model_args(files)])
    assert_one_line(code, capsys.readouterr().err, "inference.py", "No space left on device")
    # evaluate reports a full disk after all the compute in one line, and leaves no partial report set
    code = inference_main(["evaluate", "--input", str(files / "videos"), "--output", str(full_disk / "eval"),
                           "--lpips", "off", "--plots", *model_args(files)])
    assert_one_line(code, capsys.readouterr().err, "inference.py", "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# ------------------------------------------------------------------------------- train.py
def _train_cases():
    def existing_run(t):
        (t / "run" / "checkpoints").mkdir(parents=True)
        (t / "run" / "config.yaml").write_text("model: {}\n")
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

    return {
        "existing run": (existing_run, "already holds a run; continue it with `python train.py --resume"),
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
    assert_one_line(code, capsys.readouterr().err, "train.py", message)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == written_before


def test_train_option_that_the_augmented_demo_clips_do_not_take(tmp_path, capsys):
    # A row of the table above that cannot use its micro model: that trains on a video file, and
    # this error concerns the quick start's own demo data.
    code = train_main(["--logdir", str(tmp_path), "--base", *tiny_config_files(), "data.params.train.sample_fps=8"])
    assert_one_line(code, capsys.readouterr().err, "train.py",
                    "data.params.train: sample_fps do not apply to the augmented demo clips (demo_augmentation)")
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_read_only_log_directory(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(logs)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        code = train_main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
        assert_one_line(code, capsys.readouterr().err, "train.py", "Read-only file system")
    finally:
        subprocess.run(["umount", str(logs)], check=True)


def test_train_on_an_immutable_log_directory(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    if subprocess.run(["chattr", "+i", str(logs)], capture_output=True).returncode:
        pytest.skip("cannot make a folder immutable here")
    try:
        code = train_main(["--logdir", str(logs), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
        assert_one_line(code, capsys.readouterr().err, "train.py", "Operation not permitted")
    finally:
        subprocess.run(["chattr", "-i", str(logs)], check=True)


def test_encode_dataset_into_an_immutable_folder(files, tmp_path, capsys):
    # Immutable, because root (the test machines' user) writes into read-only folders anyway.
    shutil.copytree(files / "dataset", tmp_path / "latents")
    if subprocess.run(["chattr", "+i", str(tmp_path / "latents")], capture_output=True).returncode:
        pytest.skip("cannot make a folder immutable here")
    try:
        for output in (tmp_path / "latents", tmp_path / "latents" / "new"):  # resuming a dataset, and a new one
            code = inference_main(["encode-dataset", "--input", str(files / "videos"), "--output", str(output),
                                   *dataset_args(files)])
            assert_one_line(code, capsys.readouterr().err, "inference.py", "Operation not permitted")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "latents")], check=True)


# ------------------------------------------------------------------------------- scripts
def _script(name, *args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def test_script_user_errors(files, tmp_path):
    cases = [
        ("convert_checkpoint.py", ["--config", TINY_CONFIG, "--ckpt", files / "notes.txt", "--output", tmp_path / "a"],
         "is not a readable PyTorch checkpoint"),
        ("convert_checkpoint.py", ["--config", files / "bad.yaml", "--ckpt", files / "tiny.pt", "--output", tmp_path / "a"],
         "cannot read config"),
        ("compression_report.py", [files / "bad.yaml"], "cannot read config"),
        ("make_meta.py", [tmp_path / "nowhere"], "is not a folder"),
        ("benchmark.py", ["--config", files / "bad.yaml"], "cannot read config"),
        ("benchmark_train.py", ["--base", files / "bad.yaml"], "cannot read config"),
    ]
    for script, args, message in cases:
        done = _script(script, *args)
        assert_one_line(done.returncode, done.stderr, script, message)
    assert not (tmp_path / "a").exists()


def test_convert_checkpoint_refuses_to_replace_a_model_and_reports_a_full_disk(files, tmp_path, full_disk):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"a model saved before")
    done = _script("convert_checkpoint.py", "--config", TINY_CONFIG, "--ckpt", files / "tiny.pt", "--output", tmp_path / "out")
    assert_one_line(done.returncode, done.stderr, "convert_checkpoint.py", "pass --overwrite")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"a model saved before"
    done = _script("convert_checkpoint.py", "--config", TINY_CONFIG, "--ckpt", files / "tiny.pt", "--output", full_disk / "m")
    assert_one_line(done.returncode, done.stderr, "convert_checkpoint.py", "No space left on device")
    assert not any(p.name.startswith(".") for p in full_disk.rglob("*"))  # no temporary file left


def test_make_meta_on_a_full_disk_leaves_no_folder(files, full_disk, capsys):
    import importlib.util

    from vidtwin.cli_utils import run_main

    spec = importlib.util.spec_from_file_location("make_meta", REPO / "scripts" / "make_meta.py")
    make_meta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_meta)
    output = full_disk / "new" / "sub" / "meta.csv"
    code = run_main("make_meta.py", lambda: make_meta.main([str(files / "videos"), "--output", str(output)]))
    assert_one_line(code, capsys.readouterr().err, "make_meta.py", "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_bug_in_train_py_is_not_reported_as_a_config_error(tmp_path, capsys, monkeypatch):
    import vidtwin.training.cli as cli

    def broken(*args, **kwargs):
        raise TypeError("an internal inconsistency")  # once reported as "a config error"

    monkeypatch.setattr(cli, "build_callbacks", broken)
    code = train_main(["--logdir", str(tmp_path), "--name", "run", "--base", *tiny_config_files(), *micro_overrides()])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "train.py: internal error: TypeError" in err
    assert not [line for line in err.splitlines() if line.startswith("train.py: error:")]


def test_unknown_keys_of_an_official_config_are_named(tmp_path, caplog):
    text = OFFICIAL_CONFIG.read_text().replace("        depth: 2\n", "        depth: 2\n        depht: 3\n", 1)
    (tmp_path / "official.yaml").write_text(text)
    with caplog.at_level("WARNING", logger="vidtwin"):
        load_model(tmp_path / "official.yaml")
    assert "encoder_config.params has unknown setting(s) depht" in caplog.text
