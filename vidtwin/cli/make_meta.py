"""`vidtwin make-meta`: write the CSV meta file that lists the videos of a dataset folder.

The CSV has one column, ``videos``, with paths relative to DIR (the official VidTok/VidTwin
format); point a dataset at it with ``data_dir: DIR`` and ``meta_path: <csv>``. Every file under
DIR (recursively, following links) with a video extension is listed, in sorted order.

With ``--check`` every video is probed (opened and its first frame decoded); unreadable ones are
left out of the CSV and reported, so that training never meets them. Paths that begin or end
with white space are always left out and reported: a meta file cannot hold them (the dataset
strips the white space, and would read another file).

Examples:
    vidtwin make-meta /data/videos                       # writes /data/videos/meta.csv
    vidtwin make-meta /data/videos --output train.csv --check

Exit status: 0 on success; 2 with one ``vidtwin make-meta: error: ...`` line when DIR is missing,
holds no usable video, or the CSV cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..data.meta import check_videos, find_videos, split_unlistable, write_meta
from ..data.video_io import VIDEO_EXTENSIONS
from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder holding the videos (searched recursively)")
    parser.add_argument("--output", "-o", default=None, help="CSV to write (default: DIR/meta.csv)")
    parser.add_argument("--check", action="store_true", help="decode each video's first frame and drop unreadable ones")


def run(args: argparse.Namespace) -> int:
    directory = args.directory
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a folder; give the folder that holds the videos")
    output = args.output or os.path.join(directory, "meta.csv")
    videos, dropped = split_unlistable(find_videos(directory))
    if not videos and not dropped:
        raise UserError(f"no video files under {directory} (extensions: {' '.join(VIDEO_EXTENSIONS)})")
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
