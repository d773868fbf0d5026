"""Inference on real videos: any length, any resolution, latents to and from files, metrics.

The ``vidtwin`` command's reconstruct, encode, decode, cross and evaluate are thin layers over these functions.
"""

from vidtwin.inference.clips import ClipLayout, merge_clips, split_clips
from vidtwin.inference.evaluate import EvalItem, VideoScores, evaluate_videos, list_eval_items, write_reports
from vidtwin.latents.latent_file import EncodedVideo, LatentFileError, config_identity, load_latents, save_latents
from vidtwin.inference.options import InferenceError, InferenceOptions, resolve_device
from vidtwin.inference.pipeline import (
    VideoResult,
    cross_latents,
    cross_reenact,
    decode_latents,
    encode_video,
    iter_decoded,
    iter_model_space_frames,
    iter_reconstruction,
    model_space_frames,
    reconstruct_video,
    to_uint8_frames,
)
from vidtwin.inference.sources import FrameSource, SourceVideo, VideoFileSource, load_source
from vidtwin.inference.tiling import TileGrid, blend_tiles, blend_weights, extract_tiles, make_tile_grid

__all__ = [
    "ClipLayout", "split_clips", "merge_clips",
    "TileGrid", "make_tile_grid", "extract_tiles", "blend_tiles", "blend_weights",
    "EncodedVideo", "LatentFileError", "config_identity", "save_latents", "load_latents",
    "InferenceError", "InferenceOptions", "resolve_device",
    "FrameSource", "SourceVideo", "VideoFileSource", "load_source", "VideoResult", "to_uint8_frames",
    "reconstruct_video", "encode_video", "decode_latents", "cross_reenact", "cross_latents",
    "model_space_frames", "iter_reconstruction", "iter_decoded", "iter_model_space_frames",
    "EvalItem", "VideoScores", "list_eval_items", "evaluate_videos", "write_reports",
]
