"""Print the latent shapes of a VidTwin config and how much of the input they keep; for FSQ
configs also the tokens per clip and the bits per clip and per pixel.

    python -m scripts.compression_report configs/vidtwin.yaml
    python -m scripts.compression_report configs/vidtwin.yaml configs/vidtwin_paper.yaml
    python -m scripts.compression_report configs/vidtwin_fsq.yaml
"""

from __future__ import annotations

import argparse
import math

from vidtwin.cli_utils import add_debug_flag, run_cli
from vidtwin.config import autoencoder_config_from, load_config
from vidtwin.models.regularizers import regularizer_class

PROG = "compression_report.py"


def compression_rows(config) -> tuple:
    """[(name, shape, values)], total latent values, input values, for one clip."""
    rows = [(name, shape, math.prod(shape)) for name, shape in config.latent_shapes().items()]
    latent_values = sum(values for _, _, values in rows)
    input_values = config.in_channels * math.prod(config.input_size)
    return rows, latent_values, input_values


def token_rows(config) -> list:
    """[(name, tokens per clip, codebook size, bits per token)] for an FSQ config."""
    sizes = config.codebook_sizes
    rows = []
    for name, shape in config.token_shapes().items():
        codes = sizes["structure" if name == "structure" else "dynamics"]
        rows.append((name, math.prod(shape), codes, math.log2(codes)))
    return rows


def print_token_report(config) -> None:
    rows = token_rows(config)
    frames, height, width = config.input_size
    pixels = frames * height * width
    print(f"{'tokens':<12} {'per clip':>10} {'codebook':>10} {'bits/token':>11} {'bits/clip':>11}")
    for name, tokens, codes, bits in rows:
        print(f"{name:<12} {tokens:>10,} {codes:>10,} {bits:>11.2f} {tokens * bits:>11,.0f}")
    total_tokens = sum(tokens for _, tokens, _, _ in rows)
    total_bits = sum(tokens * bits for _, tokens, _, bits in rows)
    print(f"{'total':<12} {total_tokens:>10,} {'':>10} {'':>11} {total_bits:>11,.0f}")
    print(f"bits: {total_bits:,.0f} per clip ({total_bits / 8 / 1024:.2f} KiB), "
          f"{total_bits / pixels:.4f} per pixel ({frames} x {height} x {width} pixels)")


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
    if regularizer_class(config).has_tokens:
        print_token_report(config)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
