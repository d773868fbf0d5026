"""`inference.py evaluate`: metric values against independent computations, reports and plots."""

import csv
import json

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vidtwin import load_model
from vidtwin.data.video_io import read_video, write_video
from vidtwin.inference import reconstruct_video
from vidtwin.cli import main
from vidtwin.metrics import video_metrics

from conftest import TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """An original video, a perturbed copy (brightness shift + fixed noise), a checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    t = torch.arange(10, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 3, 48)[None, :, None, None]
    x = torch.linspace(0, 4, 64)[None, None, :, None]
    frames = 127.5 + 100 * torch.sin(x + y + 0.3 * t + torch.tensor([0.0, 2.0, 4.0]))  # (10, 48, 64, 3)
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(1)) * 6
    write_video(root / "clip.mp4", frames.round().to(torch.uint8), fps=10.0)
    write_video(root / "clip_perturbed.mp4", (frames + 12 + noise).round().clamp(0, 255).to(torch.uint8), fps=10.0)
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    return root


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _pairs_csv(root, rows):
    path = root / "pairs.csv"
    path.write_text("path,reconstruction\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_a_video_against_itself_is_perfect(videos, tmp_path, capsys):
    pairs = _pairs_csv(tmp_path, [(videos / "clip.mp4", videos / "clip.mp4")])
    code = main(["evaluate", "--input", str(pairs), "--output", str(tmp_path / "eval"), "--lpips", "random", "--quiet"])
    assert code == 0
    (row,) = _csv_rows(tmp_path / "eval" / "metrics.csv")
    assert row["psnr"] == "inf" and float(row["ssim"]) == 1.0 and float(row["lpips"]) == 0.0
    assert int(row["frames"]) == 10
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["psnr_mean_over_videos"] == "inf" and summary["ssim_mean_over_frames"] == 1.0
    assert summary["settings"]["lpips"] == "random" and "lpips_note" in summary["settings"]
    assert "clip" in capsys.readouterr().out


def test_one_video_is_evaluated_as_a_folder_of_one(videos, tmp_path, capsys):
    model = ["--config", str(TINY_CONFIG), "--ckpt", str(videos / "tiny.pt"), "--device", "cpu", "--dtype", "fp32"]
    one, folder = tmp_path / "one", tmp_path / "folder"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "clip.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    for source, output in ((videos / "clip.mp4", one), (alone, folder)):
        code = main(["evaluate", "--input", str(source), "--output", str(output), "--lpips", "off", "--quiet", *model])
        assert code == 0
    def scores(output):  # the rows without the path, which names the copy
        return [{key: value for key, value in row.items() if key != "path"} for row in _csv_rows(output / "metrics.csv")]

    assert scores(one) == scores(folder)
    assert [row["video"] for row in scores(one)] == ["clip"] and float(scores(one)[0]["psnr"]) > 0


def test_a_known_perturbation_matches_skimage(videos, tmp_path, capsys):
    pairs = _pairs_csv(tmp_path, [(videos / "clip.mp4", videos / "clip_perturbed.mp4")])
    assert main(["evaluate", "--input", str(pairs), "--output", str(tmp_path / "eval"), "--lpips", "random", "--quiet"]) == 0
    rows = _csv_rows(tmp_path / "eval" / "per_frame.csv")
    original = read_video(videos / "clip.mp4")[0].numpy() / 255.0  # (10, 48, 64, 3)
    perturbed = read_video(videos / "clip_perturbed.mp4")[0].numpy() / 255.0
    assert len(rows) == 10
    for index, row in enumerate(rows):
        expected_psnr = peak_signal_noise_ratio(original[index], perturbed[index], data_range=1.0)
        expected_ssim = structural_similarity(
            original[index], perturbed[index], data_range=1.0, channel_axis=2,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert float(row["psnr"]) == pytest.approx(expected_psnr, abs=1e-5)
        assert float(row["ssim"]) == pytest.approx(expected_ssim, abs=1e-5)
        assert float(row["lpips"]) > 0
    assert 15 < expected_psnr < 35 and expected_ssim < 0.99  # the perturbation is really there


def test_model_reconstructions_with_plots_and_a_bad_video(videos, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    (folder / "zz_broken.mp4").write_bytes(b"definitely not a video")
    output = tmp_path / "eval"
    code = main([
        "evaluate", "--input", str(folder), "--output", str(output), "--config", str(TINY_CONFIG),
        "--ckpt", str(videos / "tiny.pt"), "--lpips", "off", "--plots", "--quiet", "--batch-clips", "2",
    ])
    captured = capsys.readouterr()
    assert code == 1  # one video failed
    assert "zz_broken.mp4" in captured.err and "Traceback" not in captured.err
    assert "mean over videos" in captured.out
    rows = {row["video"]: row for row in _csv_rows(output / "metrics.csv")}
    assert rows["zz_broken"]["error"] and not rows["clip"]["error"] and rows["clip"]["lpips"] == ""

    # The reported PSNR/SSIM are those of the Python API's reconstruction against its input.
    model = load_model(TINY_CONFIG, videos / "tiny.pt")
    result = reconstruct_video(model, videos / "clip.mp4", batch_clips=2)  # batched as the command: the same bits
    expected = video_metrics(result.inputs[None], result.video[None])
    assert float(rows["clip"]["psnr"]) == pytest.approx(expected["psnr"].mean(), abs=1e-5)
    assert float(rows["clip"]["ssim"]) == pytest.approx(expected["ssim"].mean(), abs=1e-5)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["videos"] == 2 and summary["videos_scored"] == 1 and summary["frames"] == 10
    assert summary["failed"][0]["video"].endswith("zz_broken.mp4")

    import matplotlib.image

    image = matplotlib.image.imread(output / "plots" / "clip.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert not (output / "plots" / "zz_broken.png").exists()


def test_real_lpips_without_weights_fails_clearly(videos, tmp_path, capsys, empty_torch_home):
    pairs = _pairs_csv(tmp_path, [(videos / "clip.mp4", videos / "clip.mp4")])
    code = main(["evaluate", "--input", str(pairs), "--output", str(tmp_path / "eval"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("vidtwin evaluate: error:")]
    assert "VGG16" in line and "--lpips off" in line and "perceptual_weight" not in line  # no training advice
    assert not (tmp_path / "eval" / "metrics.csv").exists()


def test_pairs_of_different_lengths_are_reported(videos, tmp_path, capsys):
    short = tmp_path / "short.mp4"
    write_video(short, read_video(videos / "clip.mp4")[0][:6], fps=10.0)
    pairs = _pairs_csv(tmp_path, [(videos / "clip.mp4", short)])
    code = main(["evaluate", "--input", str(pairs), "--output", str(tmp_path / "eval"), "--lpips", "off", "--quiet"])
    assert code == 1
    assert "10 (sampled) frames but its reconstruction" in capsys.readouterr().err
