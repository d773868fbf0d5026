"""Multi-head self-attention with one call: `F.scaled_dot_product_attention`.

flash-attn is an optional backend. It is used only when it was asked for (`backend="flash"`), the
package is installed, the tensors are on CUDA and in half precision; otherwise the same math runs
through SDPA, which picks its own fused kernel where the device has one.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

try:  # optional extra: pip install vidtwin[flash]
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None

_warned_flash_fallback = False


def flash_attention_available() -> bool:
    return flash_attn_func is not None and torch.cuda.is_available()


def _can_use_flash(q: torch.Tensor) -> bool:
    return flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, computed in fp32 on a CPU under bf16 autocast.

    Why: torch's CPU attention kernel is slower in bf16 than in fp32 at these models' sequence
    lengths, its backward most of all (docs/benchmarks.md, "Training precision on a CPU"), while the
    matmuls around it gain from bf16. The output returns in the inputs' dtype. Outside CPU autocast
    (fp32 training, ``--dtype bf16`` inference, GPUs) this is the plain call.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **options)


class Attention(nn.Module):
    """Self-attention over the token axis of (B, N, C) with a fused qkv projection.

    Parameter names (`qkv`, `proj`) follow the official checkpoint.
    """

    def __init__(self, dim: int, num_heads: int, backend: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim)  # (B, N, 3, heads, d)
        if self.backend == "flash" and _can_use_flash(qkv):
            q, k, v = qkv.unbind(2)  # each (B, N, heads, d): flash-attn's layout
            out = flash_attn_func(q, k, v, causal=causal)  # (B, N, heads, d)
        else:
            self._note_flash_fallback(qkv)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
            out = scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, heads, N, d)
            out = out.transpose(1, 2)  # (B, N, heads, d)
        return self.proj(out.reshape(batch, tokens, channels))  # (B, N, C)

    def _note_flash_fallback(self, qkv: torch.Tensor) -> None:
        global _warned_flash_fallback
        if self.backend == "flash" and not _warned_flash_fallback:
            _warned_flash_fallback = True
            reason = "flash-attn is not installed" if flash_attn_func is None else (
                f"it needs CUDA fp16/bf16 tensors, got {qkv.device.type} {qkv.dtype}")
            logger.warning("attention_backend='flash' requested but %s; using torch SDPA instead", reason)
