"""Inference on real videos: any length, any resolution, latents to and from files, metrics.

The command line (``python inference.py --help``) is a thin layer over these functions.
"""

from vidtwin.inference.clips import ClipLayout, merge_clips, split_clips
from vidtwin.inference.evaluate import EvalItem, VideoScores, evaluate_videos, list_eval_items, write_reports
from vidtwin.inference.latent_file import EncodedVideo, LatentFileError, config_identity, load_latents, save_latents
from vidtwin.inference.pipeline import (
    InferenceError,
    SourceVideo,
    VideoResult,
    cross_reenact,
    decode_latents,
    encode_video,
    iter_decoded,
    iter_reconstruction,
    load_source,
    model_space_frames,
    reconstruct_video,
    resolve_device,
    to_uint8_frames,
)
from vidtwin.inference.tiling import TileGrid, blend_tiles, blend_weights, extract_tiles, make_tile_grid

__all__ = [
    "ClipLayout", "split_clips", "merge_clips",
    "TileGrid", "make_tile_grid", "extract_tiles", "blend_tiles", "blend_weights",
    "EncodedVideo", "LatentFileError", "config_identity", "save_latents", "load_latents",
    "InferenceError", "SourceVideo", "VideoResult", "load_source", "resolve_device", "to_uint8_frames",
    "reconstruct_video", "encode_video", "decode_latents", "cross_reenact", "model_space_frames",
    "iter_reconstruction", "iter_decoded",
    "EvalItem", "VideoScores", "list_eval_items", "evaluate_videos", "write_reports",
]
