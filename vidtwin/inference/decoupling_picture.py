"""The decoupling report's pictures: rows of frames with a text label at the left of each row.

Drawn with Pillow, which every install has (torchvision, a dependency of timm, requires it), so the
report needs no plotting package. A picture is a white canvas: per block a title line, then one
row per strip (a label, then its frames left to right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidtwin.atomic_io import atomic_path

LABEL_WIDTH = 200  # pixels of the label column
GAP = 4  # pixels between frames, rows and blocks
TITLE_HEIGHT = 18
TEXT_LINE = 14
MAX_PAIRS_SHOWN = 6  # report.png shows the first pairs' strips; report.json has every pair
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


@dataclass
class VideoStrips:
    """Frames for a picture: ``rows`` of uint8 ``(F, h, w, 3)``, one label each, at frame ``positions``."""

    title: str
    labels: list[str]
    rows: list[np.ndarray]
    positions: list[int]


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)  # a scalable font where Pillow has FreeType (Pillow >= 10.1)
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def _row_height(strips: VideoStrips, label: str) -> int:
    frames = strips.rows[0].shape[1] if strips.rows else 0
    return max(frames, TEXT_LINE * (label.count("\n") + 1))


def strips_picture(blocks: list[VideoStrips], header: list[str] | None = None) -> np.ndarray:
    """``blocks`` of labelled frame rows, under optional ``header`` lines -> uint8 ``(H, W, 3)``."""
    from PIL import Image, ImageDraw

    header = header or []
    font = _font()
    frames_width = max([row.shape[0] * (row.shape[2] + GAP) for block in blocks for row in block.rows] + [0])
    text_width = max([int(font.getlength(line)) for line in header] + [0]) + 2 * GAP
    width = max(LABEL_WIDTH + frames_width, text_width)
    height = GAP + TEXT_LINE * len(header) + (GAP if header else 0)
    for block in blocks:
        height += TITLE_HEIGHT + sum(_row_height(block, label) + GAP for label in block.labels) + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = GAP
    for line in header:
        draw.text((GAP, y), line, fill=INK, font=font)
        y += TEXT_LINE
    y += GAP if header else 0
    for block in blocks:
        frames_note = "frames " + ", ".join(str(p) for p in block.positions)
        draw.text((GAP, y + 2), f"{block.title}    ({frames_note})", fill=INK, font=font)
        y += TITLE_HEIGHT
        for label, row in zip(block.labels, block.rows):
            draw.multiline_text((GAP, y), label, fill=INK, font=font, spacing=2)
            x = LABEL_WIDTH
            for frame in row:  # (h, w, 3)
                canvas.paste(Image.fromarray(frame), (x, y))
                x += frame.shape[1] + GAP
            y += _row_height(block, label) + GAP
        y += GAP
    return np.asarray(canvas)


def overview_lines(summary: dict) -> list[str]:
    """The overall figures of report.json as text lines."""
    overall = summary["overall"]
    settings = summary["settings"]
    lines = [f"decoupling report: {overall['videos']} video(s), {settings['clips_per_video']} clip(s) of "
             f"{settings['frames_per_clip']} frames each, band cutoff {settings['band_cutoff_cycles_per_frame']:g} "
             "cycles per frame"]
    for decode in ("full", "structure", "dynamics"):
        bands = overall["bands"][decode]
        what = "both latents" if decode == "full" else f"{decode} only"
        lines.append(f"{what}: PSNR {_number(overall['psnr'][decode], 2)} dB, share of the slow change "
                     f"{_number(bands['slow'], 2)}, of the fast change {_number(bands['fast'], 2)}")
    order = overall["order"]
    if order["ratio"] is not None:
        lines.append(f"order: the structure latent moves {_number(order['ratio'], 3)} of the distance between "
                     f"videos when the frames are shuffled")
    else:
        lines.append(f"order: RMS change of the structure latent under shuffling {_number(order['structure_change'], 4)} "
                     "(the ratio needs two videos)")
    if overall.get("cross"):
        lines.append(f"cross-reenactment: PSNR to the structure source {_number(overall['cross']['psnr_to_structure_source'], 2)} dB, "
                     f"to the dynamics source {_number(overall['cross']['psnr_to_dynamics_source'], 2)} dB")
    return lines


def overview_picture(summary: dict, pairs: list[VideoStrips], videos: list[VideoStrips]) -> np.ndarray:
    """report.png: the overall figures of ``summary`` above the first ``pairs``' cross-reenactment
    strips (with one video, its single-latent decodes)."""
    blocks = pairs[:MAX_PAIRS_SHOWN] or videos[:1]
    header = overview_lines(summary)
    if len(pairs) > MAX_PAIRS_SHOWN:
        header.append(f"(the first {MAX_PAIRS_SHOWN} of {len(pairs)} pairs; report.json has every pair)")
    return strips_picture(blocks, header)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write uint8 ``(H, W, 3)`` ``image`` as a PNG, atomically (a temporary name, then a rename)."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as temp:
        Image.fromarray(image).save(temp, format="PNG")


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
