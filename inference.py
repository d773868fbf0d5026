"""VidTwin inference command line; see `python inference.py --help` and docs/inference.md."""

import sys

from vidtwin.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
