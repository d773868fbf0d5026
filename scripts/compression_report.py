"""Print the latent shapes of a VidTwin config and how much of the input they keep.

    python scripts/compression_report.py configs/vidtwin.yaml
    python scripts/compression_report.py configs/vidtwin.yaml configs/vidtwin_paper.yaml
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtwin.cli_utils import add_debug_flag, run_cli  # noqa: E402
from vidtwin.config import autoencoder_config_from, load_config  # noqa: E402

PROG = "compression_report.py"


def compression_rows(config) -> tuple:
    """[(name, shape, values)], total latent values, input values, for one clip."""
    rows = [(name, shape, math.prod(shape)) for name, shape in config.latent_shapes().items()]
    latent_values = sum(values for _, _, values in rows)
    input_values = config.in_channels * math.prod(config.input_size)
    return rows, latent_values, input_values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="+", help="config YAML(s), merged in order (this project's or the official format)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    config = autoencoder_config_from(load_config(args.config))
    rows, latent_values, input_values = compression_rows(config)
    frames, height, width = config.input_size
    print(f"input: {config.in_channels} x {frames} x {height} x {width} = {input_values:,} values per clip")
    print(f"{'latent':<12} {'shape (per clip)':<22} {'values':>10}")
    for name, shape, values in rows:
        print(f"{name:<12} {' x '.join(map(str, shape)):<22} {values:>10,}")
    print(f"{'total':<12} {'':<22} {latent_values:>10,}")
    print(f"compression: {100 * latent_values / input_values:.3f}% of the input's values "
          f"({input_values / latent_values:.0f}x fewer)")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
