"""Class labels reach a latent dataset: from a CSV column and from the first folder level (as
ImageFolder), recorded in the manifest with the class order; datasets written before labels still read."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vidtwin import load_model
from vidtwin.data.video_io import write_video
from vidtwin.cli import main
from vidtwin.latents.dataset import LatentDataset, collate_latents
from vidtwin.latents.labels import class_order

from conftest import DATA, TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one OpenMP thread (see conftest.py)

# class folder -> videos in it
LAYOUT = {"walk": ["a.mp4", "b.mp4"], "10": ["c.mp4"], "2": ["d.mp4"]}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Six-frame videos in class folders, a meta CSV naming them with a class column, a tiny checkpoint."""
    root = tmp_path_factory.mktemp("labels")
    generator = torch.Generator().manual_seed(0)
    for folder, names in LAYOUT.items():
        (root / "videos" / folder).mkdir(parents=True)
        for name in names:
            frames = torch.randint(0, 255, (6, 40, 40, 3), generator=generator, dtype=torch.uint8)
            write_video(root / "videos" / folder / name, frames, fps=8.0)
    rows = [f"{folder}/{name},{folder}-class" for folder, names in LAYOUT.items() for name in names]
    (root / "videos" / "meta.csv").write_text("videos,kind\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    return root


def encode(root: Path, source: Path, output: Path, *extra: str) -> int:
    return main(["encode-dataset", "--config", str(TINY_CONFIG), "--ckpt", str(root / "tiny.pt"), "--input", str(source),
                 "--output", str(output), "--dtype", "fp32", "--num-workers", "0", "--max-frames", "4", "--quiet", *extra])


def labels_of(dataset: LatentDataset) -> dict:
    return {dataset[i]["video"]: dataset.classes[dataset[i]["label"]] for i in range(len(dataset))}


def test_labels_from_folders_follow_imagefolder(labelled, tmp_path):
    assert encode(labelled, labelled / "videos", tmp_path / "latents", "--labels-from-folders") == 0
    dataset = LatentDataset(tmp_path / "latents")
    assert dataset.classes == ["10", "2", "walk"]  # sorted as text: not every name is a number
    assert labels_of(dataset) == {f"{folder}/{name}": folder for folder, names in LAYOUT.items() for name in names}
    manifest = dataset.manifest["labels"]
    assert manifest["source"] == "folders" and manifest["classes"] == dataset.classes
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset), collate_fn=collate_latents)))
    assert batch["label"].dtype == torch.long
    assert batch["label"].tolist() == dataset.clip_labels().tolist()


def test_labels_from_a_csv_column(labelled, tmp_path):
    assert encode(labelled, labelled / "videos" / "meta.csv", tmp_path / "latents", "--label-column", "kind") == 0
    dataset = LatentDataset(tmp_path / "latents")
    assert dataset.classes == ["10-class", "2-class", "walk-class"]
    assert labels_of(dataset) == {f"{folder}/{name}": f"{folder}-class" for folder, names in LAYOUT.items() for name in names}
    assert dataset.manifest["labels"]["source"] == "column kind"


def test_whole_numbers_are_ordered_by_value():
    assert class_order({"10", "2", "1"}) == ["1", "2", "10"]
    assert class_order({"b", "a", "10"}) == ["10", "a", "b"]


@pytest.mark.parametrize("name", ["kl_dataset", "fsq_dataset"])
def test_datasets_written_before_labels_read_without_them(name):
    dataset = LatentDataset(DATA / "legacy" / name)
    assert dataset.classes is None and dataset.clip_labels() is None
    assert "label" not in dataset[0]
    assert "label" not in collate_latents([dataset[0]], codebook=dataset.codebook)


def test_a_dataset_without_labels_has_none(labelled, tmp_path):
    assert encode(labelled, labelled / "videos", tmp_path / "latents") == 0
    dataset = LatentDataset(tmp_path / "latents")
    assert dataset.classes is None and "labels" not in dataset.manifest and "label" not in dataset[0]
