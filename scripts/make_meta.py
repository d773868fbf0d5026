"""Write the CSV meta file that lists the videos of a dataset folder.

The CSV has one column, ``videos``, with paths relative to DIR (the official VidTok/VidTwin
format); point a dataset at it with ``data_dir: DIR`` and ``meta_path: <csv>``. Every file under
DIR (recursively, following links) with a video extension is listed, in sorted order.

With ``--check`` every video is probed (opened and its first frame decoded); unreadable ones are
left out of the CSV and reported, so that training never meets them.

Examples:
    python -m scripts.make_meta /data/videos                       # writes /data/videos/meta.csv
    python -m scripts.make_meta /data/videos --output train.csv --check

Exit status: 0 on success, 1 when DIR is missing or holds no readable video, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from tqdm import tqdm

from vidtwin.atomic_io import atomic_path  # light: no model code


def _video_io():
    # Imported on first use: importing the vidtwin package loads the model code (seconds), which
    # --help and argument errors should not wait for.
    from vidtwin.data import video_io

    return video_io


def find_videos(directory: str) -> list[str]:
    """Paths (relative to ``directory``, '/'-separated) of every video file under it, sorted."""
    is_video_file = _video_io().is_video_file
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        for name in files:
            if is_video_file(name):
                relative = os.path.relpath(os.path.join(root, name), directory)
                found.append(relative.replace(os.sep, "/"))
    return sorted(found)


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


def write_meta(output: str, relative_paths: list[str]) -> None:
    """Write the CSV to a temporary file next to ``output``, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    with atomic_path(output) as temp, open(temp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["videos"])
        writer.writerows([path] for path in relative_paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("directory", metavar="DIR", help="folder holding the videos (searched recursively)")
    parser.add_argument("--output", "-o", default=None, help="CSV to write (default: DIR/meta.csv)")
    parser.add_argument("--check", action="store_true", help="decode each video's first frame and drop unreadable ones")
    args = parser.parse_args(argv)

    directory = args.directory
    if not os.path.isdir(directory):
        print(f"error: {directory} is not a folder; give the folder that holds the videos", file=sys.stderr)
        return 1
    output = args.output or os.path.join(directory, "meta.csv")
    videos = find_videos(directory)
    if not videos:
        print(f"error: no video files under {directory} (extensions: {' '.join(_video_io().VIDEO_EXTENSIONS)})", file=sys.stderr)
        return 1

    unreadable: list[tuple[str, str]] = []
    if args.check:
        videos, unreadable = check_videos(directory, videos)
        for path, reason in unreadable:
            print(f"dropped {path}: {reason}", file=sys.stderr)
        if not videos:
            print(f"error: none of the {len(unreadable)} video files under {directory} can be read", file=sys.stderr)
            return 1
    try:
        write_meta(output, videos)
    except OSError as error:
        print(f"error: cannot write {output}: {error.strerror or error}; choose another --output", file=sys.stderr)
        return 1
    dropped = f", dropped {len(unreadable)} unreadable" if args.check else ""
    print(f"wrote {output}: {len(videos)} video{'s' if len(videos) != 1 else ''}{dropped} (data_dir: {os.path.abspath(directory)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
