"""FVD: the Fréchet distance, running statistics, parity with cd-fvd, weights lookup, and the commands.

The I3D weights are random, in the standard file layout, with BatchNorm statistics set from real
clips (tests/fvd_reference.py). Parity is checked against features and an FVD recorded once with
cd-fvd's own code, and, where cd-fvd is installed, against cd-fvd run live on the same inputs.
"""

import csv
import json
import logging
import os
import re
import signal

import numpy as np
import pytest
import torch
from safetensors import safe_open

from vidtwin import load_model
from vidtwin.data.video_io import write_video
from vidtwin.fvd.features import i3d_features
from vidtwin.fvd.protocol import ClipProtocol, FVDError
from vidtwin.fvd.stats import FeatureStats, frechet_distance, fvd_of
from vidtwin.fvd.weights import WEIGHTS_FILENAME, WEIGHTS_URL, find_weights, load_i3d
from vidtwin.cli import main

import fvd_reference
from conftest import TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

PARITY_RTOL = 1e-3  # the bound; measured: features bit-identical, FVD 3e-8 relative


@pytest.fixture(scope="module")
def i3d(tmp_path_factory):
    """Calibrated random weights saved as i3d_pretrained_400.pt, and the parity test's clips."""
    root = tmp_path_factory.mktemp("fvd")
    weights = root / WEIGHTS_FILENAME
    real, fake, digest = fvd_reference.save_weights(weights)
    return {"weights": weights, "real": real, "fake": fake, "digest": digest, "root": root}


@pytest.fixture(scope="module")
def video_sets(i3d):
    """Folders of two 10-frame 64x64 videos cut from the real clips, and a noisier, reversed copy
    (the real I3D takes most of a second per clip, and the command test reads 4 sets)."""
    root = i3d["root"]
    for name, clips in (("real", i3d["real"]), ("corrupted", i3d["fake"])):
        (root / name).mkdir()
        for index, clip in enumerate(clips[:2]):
            write_video(root / name / f"video{index}.mp4", clip[:10, 40:104, 40:104], fps=10.0)  # (10, 64, 64, 3)
    return root


# ------------------------------------------------------------------------------- the distance
def test_frechet_distance_equals_the_closed_form_of_commuting_gaussians():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    variances_a, variances_b = rng.uniform(0.5, 3.0, 6), rng.uniform(0.5, 3.0, 6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    cov_a = rotation @ np.diag(variances_a) @ rotation.T  # same eigenvectors: the square root is closed-form
    cov_b = rotation @ np.diag(variances_b) @ rotation.T
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(variances_a) - np.sqrt(variances_b)) ** 2)
    assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-10)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8)) + 0.5
    stats_a, stats_b = FeatureStats(8), FeatureStats(8)
    stats_a.add(a)
    stats_b.add(b)
    assert fvd_of(stats_a, stats_a) == pytest.approx(0.0, abs=1e-9)
    assert fvd_of(stats_a, stats_b) == pytest.approx(fvd_of(stats_b, stats_a), rel=1e-9)
    assert fvd_of(stats_a, stats_b) > 1.0


def test_singular_covariances_of_few_clips_give_a_finite_distance():
    rng = np.random.default_rng(2)
    few_a, few_b = FeatureStats(400), FeatureStats(400)
    few_a.add(rng.normal(size=(5, 400)))  # rank-4 covariances of 400 dimensions
    few_b.add(rng.normal(size=(5, 400)) + 0.1)
    value = fvd_of(few_a, few_b)
    assert np.isfinite(value) and value > 0
    assert fvd_of(few_a, few_a) == pytest.approx(0.0, abs=1e-8)


def test_running_sums_equal_the_statistics_of_stacked_features():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(37, 16)) * 5 + 3
    stats = FeatureStats(16)
    for start in range(0, 37, 8):
        stats.add(torch.from_numpy(features[start:start + 8]).float())
    mean, cov = stats.mean_cov()
    stacked = features.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(stacked, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    assert stats.count == 37


def test_saved_statistics_load_back_exactly(tmp_path):
    stats = FeatureStats(400)
    stats.add(np.random.default_rng(4).normal(size=(6, 400)))
    stats.save(tmp_path / "real.safetensors", {"identity": {"frames_per_clip": 16}})
    loaded, protocol = FeatureStats.load(tmp_path / "real.safetensors")
    assert loaded.count == 6 and protocol == {"identity": {"frames_per_clip": 16}}
    np.testing.assert_array_equal(loaded.total_outer, stats.total_outer)
    (tmp_path / "other.safetensors").write_bytes(b"not statistics")
    with pytest.raises(FVDError, match="not a statistics file"):
        FeatureStats.load(tmp_path / "other.safetensors")


# ------------------------------------------------------------------------------- the protocol
def test_clip_starts_follow_the_protocol():
    assert ClipProtocol().clip_starts_of(100) == [0]
    assert ClipProtocol(clips_per_video=3).clip_starts_of(100) == [0, 42, 84]
    assert ClipProtocol(frames=10, stride=2).clip_indices(5) == list(range(5, 24, 2))
    random_starts = ClipProtocol(clips_per_video=4, clip_starts="random", seed=7)
    assert random_starts.clip_starts_of(100, 3) == random_starts.clip_starts_of(100, 3)  # reproducible
    assert random_starts.clip_starts_of(100, 3) != random_starts.clip_starts_of(100, 4)
    assert all(0 <= s <= 84 for s in random_starts.clip_starts_of(100, 3))
    with pytest.raises(FVDError, match="has 15 frames, fewer than the 16"):
        ClipProtocol().clip_starts_of(15)
    with pytest.raises(FVDError, match="--frames must be >= 9"):
        ClipProtocol(frames=8)


# ------------------------------------------------------------------------------- weights
def test_weights_are_found_in_the_hugging_face_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FVDError) as missing:
        find_weights()
    assert WEIGHTS_FILENAME in str(missing.value) and WEIGHTS_URL in str(missing.value)
    snapshot = tmp_path / "hub" / "models--someone--fvd" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / WEIGHTS_FILENAME).write_bytes(b"x")
    assert find_weights() == snapshot / WEIGHTS_FILENAME
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILENAME).write_bytes(b"y")
    assert find_weights() == tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILENAME  # the torch hub first


# ------------------------------------------------------------------------------- parity
def _reference():
    with safe_open(str(fvd_reference.REFERENCE), framework="pt") as reader:
        tensors = {name: reader.get_tensor(name) for name in reader.keys()}
        return tensors, reader.metadata()


@pytest.fixture(scope="module")
def our_features(i3d):
    """This package's I3D features of the parity clips, loaded from the weights file as the commands do."""
    model, fingerprint = load_i3d(i3d["weights"])
    assert len(fingerprint["sha256"]) == 64
    return {name: i3d_features(model, i3d[name]) for name in ("real", "fake")}  # each (4, 400)


def _fvd_of_features(features):
    stats = {name: FeatureStats(400) for name in features}
    for name, values in features.items():
        stats[name].add(values)
    return fvd_of(stats["real"], stats["fake"])


def test_features_and_fvd_equal_the_recorded_cd_fvd_reference(i3d, our_features):
    reference, metadata = _reference()
    assert i3d["digest"] == metadata["weights_digest"], "the seeded random weights changed; re-record the reference"
    for name, features in our_features.items():
        torch.testing.assert_close(features, reference[f"{name}_features"], rtol=1e-4, atol=1e-4)
        assert features.std(dim=0).mean() > 0.1  # calibrated BatchNorm: the logits vary from clip to clip
    recorded = reference["fvd"].item()
    assert recorded > 10
    assert _fvd_of_features(our_features) == pytest.approx(recorded, rel=PARITY_RTOL)


def test_fvd_equals_cd_fvd_run_live(i3d, our_features):
    cdfvd = pytest.importorskip("cdfvd.fvd", reason="cd-fvd is not installed; the recorded reference is checked above")
    evaluator = cdfvd.cdfvd("i3d", ckpt_path=str(i3d["weights"]), device="cpu", n_real="full", n_fake="full")
    expected = evaluator.compute_fvd(i3d["real"].numpy(), i3d["fake"].numpy())
    assert _fvd_of_features(our_features) == pytest.approx(float(expected), rel=PARITY_RTOL)


# ------------------------------------------------------------------------------- the commands
def test_fvd_command_reports_saves_and_reuses_real_statistics(i3d, video_sets, tmp_path, capsys, caplog):
    common = ["--fvd-weights", str(i3d["weights"]), "--frames", "9", "--device", "cpu", "--quiet"]
    real, corrupted = video_sets / "real", video_sets / "corrupted"
    with caplog.at_level(logging.WARNING):
        assert main(["fvd", "--real", str(real), "--fake", str(corrupted), "--real-split", "demo clips",
                     "--save-real-stats", str(tmp_path / "real.safetensors"), "--output", str(tmp_path / "a.json"), *common]) == 0
    assert "fewer than the 400 feature dimensions" in caplog.text
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "a.json").read_text())
    assert f"FVD {report['fvd']:.4f}\n" in printed and "frames_per_clip: 9" in printed
    protocol = report["protocol"]
    assert protocol["weights"]["sha256"] and protocol["real_clips"] == protocol["fake_clips"] == 2
    assert protocol["frames_per_clip"] == 9 and protocol["frame_stride"] == 1 and protocol["seed"] == 0
    assert protocol["real"]["split"] == "demo clips" and protocol["real"]["decoded_frame_sizes"] == ["64x64 (2 videos)"]
    assert "224x224" in protocol["i3d_resize"] and protocol["crop"] == "none"
    assert report["fvd"] > 1.0

    assert main(["fvd", "--real-stats", str(tmp_path / "real.safetensors"), "--fake", str(corrupted),
                 "--output", str(tmp_path / "b.json"), *common]) == 0
    reused = json.loads((tmp_path / "b.json").read_text())
    assert reused["fvd"] == pytest.approx(report["fvd"], rel=1e-12)
    assert reused["protocol"]["real"]["split"] == "demo clips"

    assert main(["fvd", "--real-stats", str(tmp_path / "real.safetensors"), "--fake", str(real),
                 "--output", str(tmp_path / "c.json"), *common]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["fvd"] < 1e-6 * report["fvd"]  # a set against itself


def test_evaluate_fvd_adds_the_reconstruction_fvd_to_the_reports(i3d, tmp_path, capsys):
    frames = fvd_reference.real_clips()[:2, :, 40:88, 40:104]  # (2, 16, 48, 64, 3)
    (tmp_path / "videos").mkdir()
    for index, clip in enumerate(frames):
        write_video(tmp_path / "videos" / f"v{index}.mp4", torch.cat([clip, clip.flip(0)[:2]]), fps=10.0)  # 18 frames
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), tmp_path / "tiny.pt")
    assert main(["evaluate", "--input", str(tmp_path / "videos"), "--output", str(tmp_path / "eval"), "--lpips", "off",
                 "--config", str(TINY_CONFIG), "--ckpt", str(tmp_path / "tiny.pt"), "--device", "cpu", "--dtype", "fp32",
                 "--quiet", "--fvd", "--fvd-weights", str(i3d["weights"]), "--fvd-frames", "9"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["fvd"] > 0 and summary["fvd_protocol"]["real_clips"] == 4  # two 9-frame clips of 18 frames, per video
    assert summary["fvd_protocol"]["weights"]["file"] == str(i3d["weights"])
    with open(tmp_path / "eval" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["fvd"] for row in rows[:-1]] == ["", ""]
    assert rows[-1]["video"] == "(all videos)" and float(rows[-1]["fvd"]) == pytest.approx(summary["fvd"], rel=1e-5)
    assert "rFVD" in capsys.readouterr().out


# ------------------------------------------------------------------------------- trust: what the commands say
class StandInI3D(torch.nn.Module):
    """Where a test is about the command (progress, warnings, signals, writes), not the features: 400
    features of a clip from its mean and spread of colour, in milliseconds instead of a second per clip.
    ``constant``: every clip gets the same features, as from an untrained I3D. ``on_forward(n)`` runs
    before the n-th batch."""

    def __init__(self, constant=False, on_forward=None):
        super().__init__()
        torch.manual_seed(0)
        self.projection = torch.nn.Linear(6, 400)
        self.constant, self.on_forward, self.calls = constant, on_forward, 0

    def forward(self, clips):  # (B, 3, T, 224, 224)
        self.calls += 1
        if self.on_forward is not None:
            self.on_forward(self.calls)
        colour = torch.cat([clips.mean(dim=(2, 3, 4)), clips.std(dim=(2, 3, 4))], dim=1)  # (B, 6)
        return self.projection(torch.zeros_like(colour) if self.constant else colour)  # (B, 400)


def use_stand_in(monkeypatch, model):
    monkeypatch.setattr("vidtwin.inference.fvd_command.load_i3d",
                        lambda path, device="cpu": (model, {"file": str(path), "sha256": "0" * 64}))


@pytest.fixture(scope="module")
def short_sets(tmp_path_factory):
    """Folders of three 10-frame 32x32 videos each (two distinct 9-frame clips per video), and a weights file."""
    root = tmp_path_factory.mktemp("fvd_short")
    for name, seed in (("real", 0), ("fake", 1)):
        (root / name).mkdir()
        for index in range(3):
            frames = torch.randint(0, 255, (10, 32, 32, 3), generator=torch.Generator().manual_seed(10 * seed + index),
                                   dtype=torch.uint8)
            write_video(root / name / f"v{index}.mp4", frames, fps=10.0)
    (root / "i3d.pt").write_bytes(b"stands in for the weights")
    return root


def fvd_args(sets, *more):
    return ["fvd", "--real", str(sets / "real"), "--fake", str(sets / "fake"), "--fvd-weights", str(sets / "i3d.pt"),
            "--frames", "9", "--device", "cpu", *map(str, more)]


def test_clips_per_video_counts_distinct_clips_and_each_set_has_a_progress_bar(short_sets, tmp_path, monkeypatch,
                                                                               capsys, caplog):
    use_stand_in(monkeypatch, StandInI3D())
    with caplog.at_level(logging.WARNING):
        assert main(fvd_args(short_sets, "--clips-per-video", "4", "--output", tmp_path / "fvd.json")) == 0
    report = json.loads((tmp_path / "fvd.json").read_text())
    # 10 frames hold two distinct 9-frame clips: 6 per set, not 12 with copies counted twice
    assert report["protocol"]["real_clips"] == report["protocol"]["fake_clips"] == 6
    assert report["protocol"]["fake"]["videos_with_fewer_distinct_clips"] == 3
    assert "--real: 3 of 3 videos are too short for 4 distinct clips of 9 frames" in caplog.text
    assert "(6 clips in all, not 12)" in caplog.text
    bars = capsys.readouterr().err
    for name in ("real", "fake"):  # one bar per set, counting its clips to the end
        assert re.search(rf"FVD {name}: 100%\S* *\S* 6/6 ", bars), bars
    random_starts = ClipProtocol(frames=9, clips_per_video=4, clip_starts="random", seed=3)
    assert random_starts.clip_starts_of(10) == [0, 1] and random_starts.clip_starts_of(1000) == sorted(
        set(random_starts.clip_starts_of(1000)))


def test_constant_features_give_a_warning_not_a_silent_zero(short_sets, tmp_path, monkeypatch, caplog):
    use_stand_in(monkeypatch, StandInI3D(constant=True))
    with caplog.at_level(logging.WARNING):
        assert main(fvd_args(short_sets, "--quiet", "--output", tmp_path / "fvd.json")) == 0
    report = json.loads((tmp_path / "fvd.json").read_text())
    assert report["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert len(report["warnings"]) == 2 and "barely vary between clips" in report["warnings"][0]
    assert "the weights may be untrained or damaged" in caplog.text


def test_an_untrained_i3d_is_degenerate_and_the_calibrated_one_is_not(our_features):
    from vidtwin.fvd.i3d import InceptionI3d
    from vidtwin.fvd.stats import DEGENERATE_SPREAD, degenerate_features

    torch.manual_seed(0)
    clips = torch.randint(0, 255, (3, 9, 32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    clips[1], clips[2] = 0, 255  # noise, black and white: as different as clips get
    untrained = FeatureStats(400)
    untrained.add(i3d_features(InceptionI3d().eval(), clips))
    assert untrained.relative_spread() < DEGENERATE_SPREAD / 10
    assert "barely vary" in degenerate_features(untrained, "the set")
    calibrated = FeatureStats(400)
    calibrated.add(our_features["real"])
    assert calibrated.relative_spread() > DEGENERATE_SPREAD * 10 and degenerate_features(calibrated, "the set") is None


@pytest.fixture
def terminated_test_on_sigterm():
    """Fails the test, instead of killing pytest, when a SIGTERM reaches a command that has no handler of its own."""
    def fail(signum, frame):
        pytest.fail("SIGTERM reached no handler of the command: the process would have ended without a word")

    previous = signal.signal(signal.SIGTERM, fail)
    yield
    signal.signal(signal.SIGTERM, previous)


def sigterm_at(batch):
    return lambda call: call == batch and os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.usefixtures("terminated_test_on_sigterm")
def test_sigterm_during_fvd_says_what_was_written(short_sets, tmp_path, monkeypatch, capsys):
    use_stand_in(monkeypatch, StandInI3D(on_forward=sigterm_at(2)))  # the real set's second clip
    code = main(fvd_args(short_sets, "--quiet", "--batch-clips", "1", "--output", tmp_path / "a.json"))
    err = capsys.readouterr().err
    assert code == 143 and err.strip() == ("vidtwin fvd: stopped by SIGTERM during the --real set's features: "
                                           "no FVD, and nothing was written")
    assert sorted(tmp_path.iterdir()) == []  # neither the report nor a claim file

    stats = tmp_path / "real.safetensors"
    use_stand_in(monkeypatch, StandInI3D(on_forward=sigterm_at(4)))  # the fake set's first clip
    code = main(fvd_args(short_sets, "--quiet", "--batch-clips", "1", "--output", tmp_path / "a.json",
                         "--save-real-stats", stats))
    err = capsys.readouterr().err
    assert code == 143 and f"stopped by SIGTERM during the --fake set's features: no FVD; the real statistics were " \
                           f"saved to {stats}" in err and "Traceback" not in err
    assert FeatureStats.load(stats)[0].count == 3 and not (tmp_path / "a.json").exists()
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the test's own handler is back


def test_non_finite_or_integer_i3d_weights_are_refused_when_loaded(short_sets, tmp_path, capsys):
    from vidtwin.fvd.i3d import InceptionI3d

    weights = InceptionI3d().state_dict()
    weights["Mixed_4c.b1b.conv3d.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(weights, tmp_path / "nan.pt")
    code = main([*fvd_args(short_sets, "--quiet"), "--fvd-weights", str(tmp_path / "nan.pt")])  # the last one counts
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert "hold 1 non-finite value(s) (NaN or infinity) in Mixed_4c.b1b.conv3d.weight" in err
    weights["Mixed_4c.b1b.conv3d.weight"] = weights["Mixed_4c.b1b.conv3d.weight"].nan_to_num().long()
    torch.save(weights, tmp_path / "int.pt")
    with pytest.raises(FVDError, match="hold torch.int64 values in Mixed_4c.b1b.conv3d.weight, a float parameter"):
        load_i3d(tmp_path / "int.pt")


def test_a_full_disk_while_saving_real_statistics_is_one_line(short_sets, full_disk, monkeypatch, capsys):
    use_stand_in(monkeypatch, StandInI3D())
    code = main(fvd_args(short_sets, "--quiet", "--save-real-stats", full_disk / "real.safetensors"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert f"cannot write the statistics {full_disk / 'real.safetensors'}: No space left on device" in err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_late_fvd_failure_in_evaluate_keeps_the_psnr_ssim_reports(short_sets, tmp_path, monkeypatch, capsys):
    def fails(real, fake):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), tmp_path / "tiny.pt")
    use_stand_in(monkeypatch, StandInI3D())
    monkeypatch.setattr("vidtwin.inference.fvd_reconstruction.fvd_of", fails)
    code = main(["evaluate", "--input", str(short_sets / "real"), "--output", str(tmp_path / "eval"), "--lpips", "off",
                 "--config", str(TINY_CONFIG), "--ckpt", str(tmp_path / "tiny.pt"), "--device", "cpu", "--dtype", "fp32",
                 "--quiet", "--fvd", "--fvd-weights", str(short_sets / "i3d.pt"), "--fvd-frames", "9"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert (f"the reconstruction FVD failed (LinAlgError: Eigenvalues did not converge); the per-video metrics were "
            f"written to {tmp_path / 'eval'} without it") in err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["videos_scored"] == 3 and summary["psnr_mean_over_videos"] > 0 and "fvd" not in summary
