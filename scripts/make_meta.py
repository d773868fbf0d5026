"""Write the CSV meta file that lists the videos of a dataset folder.

The CSV has one column, ``videos``, with paths relative to DIR (the official VidTok/VidTwin
format); point a dataset at it with ``data_dir: DIR`` and ``meta_path: <csv>``. Every file under
DIR (recursively, following links) with a video extension is listed, in sorted order.

With ``--check`` every video is probed (opened and its first frame decoded); unreadable ones are
left out of the CSV and reported, so that training never meets them. Paths that begin or end
with white space are always left out and reported: a meta file cannot hold them (the dataset
strips the white space, and would read another file).

Examples:
    python -m scripts.make_meta /data/videos                       # writes /data/videos/meta.csv
    python -m scripts.make_meta /data/videos --output train.csv --check

Exit status: 0 on success; 2 with one ``make_meta.py: error: ...`` line when DIR is missing,
holds no usable video, or the CSV cannot be written (see vidtwin/cli/convention.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from tqdm import tqdm

from vidtwin.atomic_io import atomic_path  # light: no model code
from vidtwin.cli.convention import add_debug_flag, run_cli
from vidtwin.errors import UserError

PROG = "make_meta.py"


def _video_io():
    # Imported on first use: importing the vidtwin package loads the model code (seconds), which
    # --help and argument errors should not wait for.
    from vidtwin.data import video_io

    return video_io


def find_videos(directory: str) -> list[str]:
    """Paths (relative to ``directory``, '/'-separated) of every video file under it, sorted; linked
    folders are followed, each real folder once (see vidtwin.data.folders.list_video_files)."""
    from vidtwin.data.folders import list_video_files

    paths = list_video_files(directory)
    return sorted(os.path.relpath(path, directory).replace(os.sep, "/") for path in paths)


def check_videos(directory: str, relative_paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split paths into (readable, [(unreadable, reason)]) by probing each one."""
    video_io = _video_io()
    readable, unreadable = [], []
    for relative in tqdm(relative_paths, desc="checking videos", unit="video"):
        try:
            video_io.probe_video(os.path.join(directory, relative))
            readable.append(relative)
        except video_io.VideoReadError as error:
            unreadable.append((relative, str(error)))
    return readable, unreadable


def split_unlistable(relative_paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split paths into (listable, [(unlistable, reason)]): the dataset strips white space from each path."""
    listable = [path for path in relative_paths if path == path.strip()]
    unlistable = [(path, f"{path!r} begins or ends with white space, which the dataset strips; rename it")
                  for path in relative_paths if path != path.strip()]
    return listable, unlistable


def write_meta(output: str, relative_paths: list[str]) -> None:
    """Write the CSV to a temporary file next to ``output``, then rename it into place.

    Folders created for it are removed again when the write fails, so a failure leaves nothing.
    """
    directory = os.path.dirname(os.path.abspath(output))
    created = []
    parent = directory
    while not os.path.isdir(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(directory, exist_ok=True)
        with atomic_path(output) as temp, open(temp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["videos"])
            writer.writerows([path] for path in relative_paths)
    except OSError:
        for folder in created:  # innermost first
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("directory", metavar="DIR", help="folder holding the videos (searched recursively)")
    parser.add_argument("--output", "-o", default=None, help="CSV to write (default: DIR/meta.csv)")
    parser.add_argument("--check", action="store_true", help="decode each video's first frame and drop unreadable ones")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    directory = args.directory
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a folder; give the folder that holds the videos")
    output = args.output or os.path.join(directory, "meta.csv")
    videos, dropped = split_unlistable(find_videos(directory))
    if not videos and not dropped:
        raise UserError(f"no video files under {directory} (extensions: {' '.join(_video_io().VIDEO_EXTENSIONS)})")
    if args.check:
        videos, unreadable = check_videos(directory, videos)
        dropped += unreadable
    for path, reason in dropped:
        print(f"dropped {path}: {reason}", file=sys.stderr)
    if not videos:
        raise UserError(f"none of the {len(dropped)} video files under {directory} can be listed (see above)")
    try:
        write_meta(output, videos)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror or error}; choose another --output") from None
    dropped_note = f", dropped {len(dropped)}" if dropped or args.check else ""
    print(f"wrote {output}: {len(videos)} video{'s' if len(videos) != 1 else ''}{dropped_note} (data_dir: {os.path.abspath(directory)})")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
