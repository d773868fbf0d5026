#!/usr/bin/env python3
"""VidTwin inference from a clone: `python inference.py COMMAND ...` is `vidtwin COMMAND ...`
(reconstruct, encode, decode, cross, evaluate, fvd, encode-dataset, generate; see `vidtwin --help`)."""

import sys

from vidtwin.cli import main

if __name__ == "__main__":
    sys.exit(main())
