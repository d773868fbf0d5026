"""The generator and the world model are tied to the autoencoder weights of their training data, and
`vidtwin generate` refuses nonsense in one line before any work (issue 32, sections 3, 4 and 6).

- Training records the latent dataset's weights fingerprint and refuses an autoencoder of other
  weights; `generate` and the player check any autoencoder, given or recorded, against it, and say
  which one they loaded; `--save-latents` stamps the training data's fingerprint, so that `decode`
  keeps refusing other weights.
- Relative recorded paths are found where training ran (or around the moved run), never in the
  current folder as such.
- A resume on relabelled data says what changed in the label table.
- Latent statistics with a zero or non-finite std are refused.
- Numbers, seeds, class names and file names of `generate`.
"""

import json
import os
import shutil
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from vidtwin import load_model
from vidtwin.cli import main as vidtwin
from vidtwin.cli import train_main
from vidtwin.generation import GeneratorConfig, GeneratorSampleError, LatentGenerator, LatentNormalization, load_generator
from vidtwin.generation.normalization import NormalizationError
from vidtwin.inference.generate import class_file_stems, plan_batches
from vidtwin.latents.latent_file import weights_fingerprint

from conftest import REPO, TINY_CONFIG
from generation_helpers import CLASSES, generator_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

LEGACY = REPO / "tests" / "data" / "legacy" / "640498a"


@contextmanager
def working_folder(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before)


def other_weights(path: Path) -> Path:
    """The tiny config's weights at another seed: the same architecture, other weights."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        torch.save(load_model(TINY_CONFIG).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clone(tmp_path_factory, labelled_latents):
    """A generator trained for 2 updates in ``clone/`` on the shared labelled dataset, naming its
    autoencoder by relative paths (``ae/tiny.yaml``, ``ae/tiny.pt``), as a user in a clone does."""
    root = tmp_path_factory.mktemp("trust") / "clone"
    (root / "ae").mkdir(parents=True)
    shutil.copy(TINY_CONFIG, root / "ae" / "tiny.yaml")
    shutil.copy(labelled_latents / "tiny.pt", root / "ae" / "tiny.pt")
    config = generator_config(root / "gen.yaml", labelled_latents / "latents", None,
                              autoencoder={"config": "ae/tiny.yaml", "ckpt": "ae/tiny.pt"})
    with working_folder(root):
        assert train_main(["--logdir", "logs", "--name", "gen", "--base", str(config),
                           "lightning.callbacks.samples=null"]) == 0
    return root


def generate(*argv) -> int:
    return vidtwin(["generate", "--steps", "2", "--quiet", "--device", "cpu", *map(str, argv)])


def its_autoencoder(clone: Path) -> list:
    """``--config``/``--ckpt`` of the clone's autoencoder, named outright."""
    return ["--config", TINY_CONFIG, "--ckpt", clone / "ae" / "tiny.pt"]


def one_error_line(capsys, command: str = "generate") -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"vidtwin {command}: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    return errors[0]


# ---------------------------------------------------------------------------- 3: one autoencoder
def test_generate_refuses_an_autoencoder_with_other_weights_and_stamps_the_training_datas(clone, tmp_path, capsys):
    generator = clone / "logs" / "gen"
    other = other_weights(tmp_path / "other.pt")
    assert generate("--generator", generator, "--class", "up", "--config", TINY_CONFIG, "--ckpt", other,
                    "--output", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "has other weights" in line and "--allow-other-weights" in line and not (tmp_path / "out").exists()

    # Forced: the latents are still the training data's, and their files say so; decode refuses them
    # with the other weights, and decodes them with the right ones.
    assert generate("--generator", generator, "--class", "up", "--config", TINY_CONFIG, "--ckpt", other,
                    "--allow-other-weights", "--save-latents", "--output", tmp_path / "out") == 0
    latents = tmp_path / "out" / "up_000.safetensors"
    decode = ["decode", "--latents", str(latents), "--config", str(TINY_CONFIG), "--device", "cpu", "--quiet"]
    assert vidtwin([*decode, "--ckpt", str(other), "--output", str(tmp_path / "a.mp4")]) == 2
    assert "other weights" in one_error_line(capsys, "decode")
    assert vidtwin([*decode, "--ckpt", str(clone / "ae" / "tiny.pt"), "--output", str(tmp_path / "b.mp4")]) == 0


def test_the_recorded_autoencoder_trained_further_is_refused(clone, tmp_path, capsys):
    moved = shutil.copytree(clone, tmp_path / "clone")
    other_weights(moved / "ae" / "tiny.pt")  # the run's autoencoder file now holds other weights
    # The moved run's record points at the old clone, which still holds the right weights: use a
    # copy of the generator whose record has no working folder, so the moved clone's file is found.
    generator = load_generator(moved / "logs" / "gen")
    generator.autoencoder_files = {**generator.autoencoder_files, "working_dir": None}
    generator.save_pretrained(moved / "exported")
    assert generate("--generator", moved / "exported", "--class", "up", "--output", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "now holds other weights" in line and str(moved / "ae" / "tiny.pt") in line


def test_training_refuses_an_autoencoder_with_other_weights(labelled_latents, tmp_path, capsys):
    other = other_weights(tmp_path / "other.pt")
    config = generator_config(tmp_path / "gen.yaml", labelled_latents / "latents", other)
    assert train_main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config)]) == 2
    line = one_error_line(capsys, "train")
    assert "has other weights" in line and "model.params.allow_other_weights" in line
    assert not (tmp_path / "logs").exists()


def test_recorded_relative_paths_are_found_where_training_ran_and_said(clone, tmp_path, capsys):
    # Another clone with its own, other, ae/tiny.pt: a relative path read in the current folder picks it.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ae").mkdir(parents=True)
    shutil.copy(TINY_CONFIG, elsewhere / "ae" / "tiny.yaml")
    other_weights(elsewhere / "ae" / "tiny.pt")
    fingerprint = weights_fingerprint(load_model(TINY_CONFIG, clone / "ae" / "tiny.pt"))
    with working_folder(elsewhere):
        assert generate("--generator", os.path.relpath(clone / "logs" / "gen"), "--class", "up", "--output", "out") == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "autoencoder" in line]
    assert said == [f"vidtwin generate: autoencoder {clone / 'ae' / 'tiny.pt'} (the one the generator records), "
                    f"weights fingerprint {fingerprint}: those that encoded the generator's training data"]

    # The clone moved (its training folder gone): found beside the run, where it moved with it.
    moved = shutil.copytree(clone, tmp_path / "moved")
    generator = load_generator(moved / "logs" / "gen")
    generator.autoencoder_files = {**generator.autoencoder_files, "working_dir": str(tmp_path / "gone")}
    generator.save_pretrained(moved / "logs" / "exported")
    with working_folder(elsewhere):
        assert generate("--generator", moved / "logs" / "exported", "--class", "up", "--output", "out2") == 0
    assert f"autoencoder {moved / 'ae' / 'tiny.pt'} (the one" in capsys.readouterr().err


def test_a_recorded_path_is_never_read_in_the_current_folder_as_such(tmp_path):
    from vidtwin.pretrained import resolve_recorded_path

    for folder in ("clone/ae", "clone/logs/gen", "here/ae"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "clone" / "ae" / "x.pt").write_bytes(b"")
    (tmp_path / "here" / "ae" / "x.pt").write_bytes(b"")
    run, gone = tmp_path / "clone" / "logs" / "gen", str(tmp_path / "gone")
    with working_folder(tmp_path / "here"):
        assert resolve_recorded_path("ae/x.pt", str(tmp_path / "clone"), None) == str(tmp_path / "clone" / "ae" / "x.pt")
        assert resolve_recorded_path("ae/x.pt", gone, run) == str(tmp_path / "clone" / "ae" / "x.pt")
        # An absolute path inside a training folder that moved: found at its place beside the run.
        assert resolve_recorded_path(f"{gone}/ae/x.pt", gone, run) == str(tmp_path / "clone" / "ae" / "x.pt")
        assert resolve_recorded_path("ae/x.pt", gone, None) is None  # not ./ae/x.pt


# ---------------------------------------------------------------------------- 3: resume on other labels
def relabelled_copy(source: Path, target: Path, relabel) -> Path:
    """A copy of the latent dataset whose manifest's label table is ``relabel(labels entry)``."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["labels"] = relabel(manifest["labels"])
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def swap_up_and_down(labels: dict) -> dict:
    """The same class names, in another meaning: the videos of "up" are now "down" and back."""
    swapped = {0: 1, 1: 0, 2: 2}
    return {**labels, "videos": {video: swapped[label] for video, label in labels["videos"].items()}}


def two_classes(labels: dict) -> dict:
    return {**labels, "classes": ["down", "up"], "videos": {video: label % 2 for video, label in labels["videos"].items()}}


def encoded_again(labels: dict):
    """Not a relabel: the dataset encoded again by an autoencoder of other weights."""
    return None


@pytest.mark.parametrize("relabel,expected", [
    (swap_up_and_down, "the same 3 class names now label other videos (2 classes changed: down, up)"),
    (two_classes, "its classes changed (3 classes then, 2 now; gone: zero)"),
    (encoded_again, "it was encoded again with other autoencoder weights"),
])
def test_a_resume_on_relabelled_data_says_what_changed(labelled_latents, tmp_path, capsys, relabel, expected):
    from generation_helpers import write_labelled_dataset

    data = shutil.copytree(labelled_latents / "latents", tmp_path / "latents")
    config = generator_config(tmp_path / "gen.yaml", data, None, max_steps=1)
    logs = tmp_path / "logs"
    assert train_main(["--logdir", str(logs), "--name", "run", "--base", str(config)]) == 0
    before = (logs / "run" / "checkpoints" / "last.ckpt").read_bytes()
    shutil.rmtree(data)
    if relabel is encoded_again:
        write_labelled_dataset(data, other_weights(tmp_path / "other.pt"))
    else:
        relabelled_copy(labelled_latents / "latents", data, relabel)
    capsys.readouterr()
    assert train_main(["--logdir", str(logs), "--resume", str(logs / "run"), "lightning.trainer.max_steps=2"]) == 2
    line = one_error_line(capsys, "train")
    assert expected in line and "nothing was changed" in line, line
    assert (logs / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


# ---------------------------------------------------------------------------- 3: statistics
def test_statistics_with_a_zero_or_non_finite_std_are_refused_before_training(labelled_latents, tmp_path, capsys):
    shapes = {name: list(shape) for name, shape in load_model(TINY_CONFIG).config.latent_shapes().items()}
    stats = LatentNormalization.identity(shapes)
    stats.std["dynamics_x"][2] = 0.0
    (tmp_path / "stats.json").write_text(json.dumps(stats.to_dict()))
    config = generator_config(tmp_path / "gen.yaml", labelled_latents / "latents", None,
                              normalization=str(tmp_path / "stats.json"))
    assert train_main(["--logdir", str(tmp_path / "logs"), "--name", "run", "--base", str(config)]) == 2
    line = one_error_line(capsys, "train")
    assert "dynamics_x channel 2 has std 0.0" in line and not (tmp_path / "logs").exists()

    stats.std["dynamics_x"][2] = float("nan")
    generator = LatentGenerator(GeneratorConfig.from_preset("tiny", latent_shapes=shapes))
    with pytest.raises(NormalizationError, match="dynamics_x channel 2 has std nan"):
        generator.set_normalization(stats)
    constant = {name: torch.ones(4, *shape) for name, shape in shapes.items()}
    with pytest.raises(NormalizationError, match="structure channel 0 has std 0.0"):
        LatentNormalization.fit([constant])


# ---------------------------------------------------------------------------- 4: numbers and names
@pytest.mark.parametrize("argv,expected", [
    (["--guidance", "nan"], "--guidance must be a finite number >= 0"),
    (["--guidance", "inf"], "--guidance must be a finite number >= 0"),
    (["--guidance", "-1"], "--guidance must be a finite number >= 0"),
    (["--fps", "nan"], "--fps must be a finite number in (0, 1000]"),
    (["--fps", "0"], "--fps must be a finite number in (0, 1000]"),
    (["--seed", str(2 ** 70)], "--seed must be a whole number from -2**63 to 2**64 - 1"),
    (["--seed", str(-(2 ** 63) - 1)], "--seed must be a whole number from -2**63 to 2**64 - 1"),
])
def test_bad_numbers_are_one_line_before_the_model_loads(tmp_path, capsys, argv, expected):
    # No generator exists there: the numbers are refused before anything is loaded.
    assert generate("--generator", tmp_path / "none", "--all-classes", "--output", tmp_path / "out", *argv) == 2
    line = one_error_line(capsys)
    assert expected in line and not (tmp_path / "out").exists()


def test_a_seed_torch_takes_is_taken_and_the_total_is_said_first(clone, tmp_path, capsys):
    assert generate("--generator", clone / "logs" / "gen", "--class", "up", "--num", "2", "--batch-clips", "1",
                    "--seed", 2 ** 64 - 1, "--output", tmp_path / "out", *its_autoencoder(clone)) == 0
    err = capsys.readouterr().err
    assert "generating 2 videos (1 class x 2)" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["up_000.mp4", "up_001.mp4"]


def test_the_plan_is_lazy_and_flat_in_num(clone, tmp_path, capsys):
    stems = {0: "down", 1: "up", 2: "zero", 3: "sample"}
    tracemalloc.start()
    batches = plan_batches(stems, [0, 1, 2], 10 ** 12, 16, seed=0)
    first = [next(batches) for _ in range(3)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [s.stem for s in first[0][:2]] == ["down_000", "down_001"] and len(first[2]) == 16
    assert peak < 1_000_000, peak
    # A plan of 3e12 videos that meets an existing output is refused at once, nothing written.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "zero_000007.mp4").write_bytes(b"")
    (tmp_path / "out" / "up_001.mp4").write_bytes(b"")
    assert generate("--generator", clone / "logs" / "gen", "--all-classes", "--num", 10 ** 12,
                    "--output", tmp_path / "out", *its_autoencoder(clone)) == 2
    assert "output" in one_error_line(capsys) and len(list((tmp_path / "out").iterdir())) == 2


def test_class_names_win_over_indices_and_an_ambiguous_index_is_refused():
    numbered = LatentGenerator(GeneratorConfig.from_preset("tiny", num_classes=10,
                                                           class_names=[str(10 * k) for k in range(1, 11)]))
    assert numbered.class_labels(["10", "100"]) == [0, 9]
    with pytest.raises(GeneratorSampleError, match="class '5' is ambiguous"):
        numbered.class_labels(["5"])
    named = LatentGenerator(GeneratorConfig.from_preset("tiny", num_classes=3, class_names=CLASSES))
    assert named.class_labels(["1", "zero"]) == [1, 2]  # no name is a number: digits are indices


def test_class_names_that_make_one_file_name_get_unique_ones(clone, tmp_path, capsys):
    generator = load_generator(clone / "logs" / "gen")
    generator.config.class_names = ["猫", "犬", "a b"]
    generator.save_pretrained(tmp_path / "renamed")
    assert generate("--generator", tmp_path / "renamed", "--all-classes", "--output", tmp_path / "out",
                    *its_autoencoder(clone)) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0-class_000.mp4", "1-class_000.mp4", "a_b_000.mp4"]
    assert "class names of the file names: 0-class = 猫; 1-class = 犬; a_b = a b" in capsys.readouterr().out

    assert class_file_stems(["a b", "a_b", "c"]) == ["0-a_b", "1-a_b", "c"]
    assert class_file_stems(["Up", "up"]) == ["0-Up", "1-up"]  # one file on a case-blind file system
    assert class_file_stems(["x", "x_", "0-x"]) == ["0-x", "1-x", "2-0-x"]  # a renamed one meets a name


def test_the_unconditional_report_names_no_class_and_no_guidance(clone, tmp_path, capsys):
    assert generate("--generator", clone / "logs" / "gen", "--unconditional", "--output", tmp_path / "out",
                    *its_autoencoder(clone)) == 0
    report = capsys.readouterr().out.strip().splitlines()[-1]
    assert report == f"wrote 1 videos to {tmp_path / 'out'} (unconditional, 2 euler steps, seed 0)"


# ---------------------------------------------------------------------------- 6: a world model for a generator
def test_a_world_model_given_as_the_generator_is_named(tmp_path, capsys):
    for world in (LEGACY / "world_run", LEGACY / "world_pretrained"):
        assert generate("--generator", world, "--all-classes", "--output", tmp_path / "out") == 2
        line = one_error_line(capsys)
        assert f"--generator {world} is a world model, not a generator: play it with `vidtwin play {world}" in line
    assert generate("--generator", LEGACY / "autoencoder_pretrained", "--all-classes", "--output", tmp_path / "out") == 2
    assert "is an autoencoder, not a generator" in one_error_line(capsys)


# ---------------------------------------------------------------------------- 3: the player
def test_the_player_checks_and_says_its_autoencoder(tmp_path):
    from world_helpers import make_play_files
    from vidtwin.generation import WorldModel
    from vidtwin.generation.player import WorldPlayer
    from vidtwin.pretrained import OtherWeightsError

    files = make_play_files(tmp_path / "play")
    world = WorldModel.from_pretrained(files / "world")
    right = weights_fingerprint(load_model(files / "ae.yaml", files / "ae.pt"))
    said = []
    world.autoencoder_files = {**world.autoencoder_files, "weights_fingerprint": right}
    world.save_pretrained(tmp_path / "right")
    WorldPlayer(tmp_path / "right", announce=said.append)
    assert said == [f"autoencoder {files / 'ae.pt'} (the one the world model records), weights fingerprint {right}: "
                    "those that encoded the world model's training data"]
    world.autoencoder_files = {**world.autoencoder_files, "weights_fingerprint": "0123456789abcdef"}
    world.save_pretrained(tmp_path / "wrong")
    with pytest.raises(OtherWeightsError, match="now holds other weights"):
        WorldPlayer(tmp_path / "wrong", announce=None)
    WorldPlayer(tmp_path / "wrong", allow_other_weights=True, announce=said.append)
    assert said[-1].endswith("not those that encoded the world model's training data (0123456789abcdef): "
                             "--allow-other-weights")
