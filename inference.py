"""VidTwin inference command line; see `python inference.py --help` and docs/inference.md."""

import sys

from vidtwin.entry_points import inference

if __name__ == "__main__":
    sys.exit(inference())
