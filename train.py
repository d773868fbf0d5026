#!/usr/bin/env python3
"""Train or fine-tune VidTwin. See docs/training.md, or run `python train.py --help`.

    python train.py --base configs/tiny.yaml
    python train.py --base configs/vidtwin.yaml --devices 4 data.params.batch_size=2
    python train.py --resume logs/<run>
"""

import sys

from vidtwin.entry_points import train

if __name__ == "__main__":
    sys.exit(train())
