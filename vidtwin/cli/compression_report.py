"""`vidtwin compression-report`: print the latent shapes of a VidTwin config and how much of the input they keep; for FSQ
configs also the tokens per clip and the bits per clip and per pixel. For the latent generator,
the tokens per clip and forward GFLOPs of one clip through a transformer of a size preset
(`--generator`, default the paper's stand-in DiT: 6 layers, 8 heads, hidden 512, FFN 2048, patch 2
in every dimension); `--compare-tokenizers` puts them beside the same DiT on other tokenizers'
latent grids of one 16x224x224 clip, to check the paper's "4-8x fewer FLOPs".

    vidtwin compression-report vidtwin
    vidtwin compression-report vidtwin vidtwin_paper
    vidtwin compression-report vidtwin vidtwin_fsq
    vidtwin compression-report vidtwin vidtwin_paper --compare-tokenizers
"""

from __future__ import annotations

import argparse
import math

from ..config import autoencoder_config_from, load_config
from ..errors import UserError
from ..generation import GENERATOR_SIZES, GeneratorConfig, LatentPacking, transformer_flops
from ..generation.packing import PatchGroup
from ..models.regularizers import regularizer_class

FLOPS_PRESET = "dit-flops"
# Other tokenizers' latents of one 16x224x224 clip: (name, channels, (frames, height, width)).
# Causal tokenizers (VidTok's causal models, Cosmos) encode 1 + 4k frames: a 17-frame clip would
# get one latent frame more than listed here (5 and 3 instead of 4 and 2).
OTHER_TOKENIZERS = (
    ("VidTok 4x8x8 (16 ch)", 16, (16 // 4, 224 // 8, 224 // 8)),
    ("Cosmos CV 4x8x8 (16 ch)", 16, (16 // 4, 224 // 8, 224 // 8)),
    ("Cosmos CV 8x8x8 (16 ch)", 16, (16 // 8, 224 // 8, 224 // 8)),
    ("SD-VAE 8x8 per frame (4 ch)", 4, (16, 224 // 8, 224 // 8)),
)


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


def generator_cost(groups, preset: str = FLOPS_PRESET) -> tuple:
    """(tokens per clip, forward GFLOPs per clip) of the generator preset over patch groups."""
    size = GENERATOR_SIZES[preset]
    tokens = sum(group.num_tokens for group in groups)
    flops = transformer_flops(tokens, [(g.num_tokens, g.token_dim) for g in groups], size["hidden_size"], size["depth"],
                              int(size["hidden_size"] * size["mlp_ratio"]))
    return tokens, flops / 1e9


def vidtwin_groups(config, preset: str = FLOPS_PRESET) -> tuple:
    """The patch groups of a config's latents, packed as the generator packs them."""
    patches = GeneratorConfig.from_preset(preset) if preset in GENERATOR_SIZES else GeneratorConfig()
    return LatentPacking(config.latent_shapes(), patches.structure_patch_size, patches.dynamics_patch_size).groups


def tokenizer_groups(channels: int, grid: tuple, patch: tuple = (2, 2, 2)) -> tuple:
    """One group: another tokenizer's latent video (channels, frames, height, width), cut into patches."""
    return (PatchGroup("latent", (channels, *grid), patch),)


def print_generator_report(config, preset: str, compare: bool) -> None:
    from vidtwin.generation import GENERATOR_SIZES

    size = GENERATOR_SIZES[preset]
    tokens, gflops = generator_cost(vidtwin_groups(config, preset), preset)
    print(f"generator {preset} ({size['depth']} layers, {size['num_heads']} heads, hidden {size['hidden_size']}, "
          f"FFN {int(size['hidden_size'] * size['mlp_ratio'])}): {tokens:,} tokens per clip, "
          f"{gflops:.2f} forward GFLOPs per clip")
    if not compare:
        return
    rows = [("VidTwin (this config)", tokens, gflops)]
    for name, channels, grid in OTHER_TOKENIZERS:
        rows.append((name, *generator_cost(tokenizer_groups(channels, grid), preset)))
    print("the same generator on other tokenizers' latents of one 16x224x224 clip, patch 2 in every dimension:")
    print(f"{'latents':<30} {'tokens':>8} {'GFLOPs':>9} {'VidTwin is':>13}")
    for name, count, cost in rows:
        ratio = "" if name.startswith("VidTwin") else f"{cost / gflops:.1f}x fewer"
        print(f"{name:<30} {count:>8,} {cost:>9.2f} {ratio:>13}")
    ratios = [cost / gflops for _, _, cost in rows[1:]]
    holds = all(4.0 <= r for r in ratios)
    print(f"the paper's \"4-8x fewer FLOPs\": {'holds' if holds else 'does not hold for every tokenizer'} here "
          f"(VidTwin needs {min(ratios):.1f}x to {max(ratios):.1f}x fewer)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="+", help="config YAML(s) or presets, merged in order (this project's or the official format)")
    parser.add_argument("--generator", default=FLOPS_PRESET,
                        help=f"generator size preset for the tokens and GFLOPs lines (default {FLOPS_PRESET}, the paper's stand-in DiT)")
    parser.add_argument("--compare-tokenizers", action="store_true",
                        help="also the same generator on other tokenizers' latents of a 16x224x224 clip")


def run(args: argparse.Namespace) -> int:
    if args.generator not in GENERATOR_SIZES:
        raise UserError(f"unknown --generator {args.generator!r}; choose one of {', '.join(GENERATOR_SIZES)}")
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
    print_generator_report(config, args.generator, args.compare_tokenizers)
    return 0
