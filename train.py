#!/usr/bin/env python3
"""Train or fine-tune VidTwin from a clone: the same as `vidtwin train` (see `vidtwin train --help`).

    python train.py --base configs/tiny.yaml
    python train.py --base configs/vidtwin.yaml --devices 4 data.params.batch_size=2
    python train.py --resume logs/<run>
"""

import sys

from vidtwin.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
