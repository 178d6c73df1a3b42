"""ViT blocks for AST: timm's ``Block`` with an attention that is fast for inference on CPUs.

:func:`vit_blocks` builds timm ``Block`` s and gives each an :class:`Attention` with timm's
parameter layout (``attn.qkv``, ``attn.proj``), so checkpoints are unchanged. Two things differ
from timm's attention, both exact in fp32:

- :func:`attend` is ``F.scaled_dot_product_attention``, except for bf16 (e.g. under autocast) on
  CPU without autograd. There PyTorch's fused CPU kernel runs no faster than in fp32, so each
  (batch, head) is computed as two matrix products and a softmax on bf16 data (fp32
  accumulation, scores rounded to bf16, as eager attention under autocast does). On a 2-core
  AVX-512-BF16 CPU, one AST-Base attention (8 clips, 12 heads, 1214 tokens) took 0.20 s this way
  and 0.29 s in the fused kernel (1.4x; 1.5-2.5x in noisier runs).
- :func:`block_prefix` runs a block for its first ``n`` tokens only. A pooled classifier needs
  just the cls and distillation tokens after the last block, so that block computes keys and
  values for all tokens but queries, attention, projection and MLP for two: AST-Base at 1024
  frames does 242 instead of 261 GFLOP per clip (-7 %) with the same logits.

With int8 linear layers (``--precision int8``, :func:`sed.export.quantize.quantize_torch`) the
attention products are about half the remaining time; on CPUs with native bf16 they run in bf16
(measured on AST-Base, 8 clips: int8 6.1 s, int8 with bf16 attention 5.4 s, fp32 12.3 s; same top-1).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["Attention", "attend", "block_prefix", "vit_blocks"]

#: whether this CPU multiplies bf16 natively (AVX-512-BF16 / AMX)
_CPU_BF16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``q [B, H, Nq, d]``, ``k, v [B, H, N, d]`` -> ``[B, H, Nq, d]``."""
    if (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and dropout_p == 0.0
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
    ):
        return _attend_cpu_bf16(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def _attend_cpu_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b, h, nq, d = q.shape
    qs = (q * d**-0.5).reshape(b * h, nq, d)
    kt = k.reshape(b * h, -1, d).transpose(1, 2)
    vs = v.reshape(b * h, -1, d)
    out = q.new_empty(b * h, nq, d)
    for i in range(b * h):  # one (batch, head) at a time: its scores stay in cache
        scores = torch.mm(qs[i], kt[i])
        torch.mm(torch.softmax(scores, dim=-1), vs[i], out=out[i])
    return out.view(b, h, nq, d)


class Attention(nn.Module):
    """Multi-head self-attention with timm's ``qkv`` / ``proj`` parameters, through :func:`attend`.

    ``num_queries`` limits the output (and the query projection) to the first tokens. Built from
    the ``qkv`` ``[3 * dim, dim]`` and ``proj`` ``[dim, dim]`` layers it takes over.
    """

    def __init__(
        self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__()
        dim = proj.in_features
        if dim % num_heads or qkv.out_features != 3 * dim:
            raise ValueError(f"qkv {qkv.out_features}, proj {dim} and {num_heads} heads do not fit")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv, self.proj = qkv, proj
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("AST attention takes no mask")
        b, n, c = x.shape
        h, hd = self.num_heads, self.head_dim
        nq = n if num_queries is None else num_queries
        if nq == n or not isinstance(self.qkv, nn.Linear):  # (a quantised qkv has no weight to slice)
            q, k, v = self.qkv(x).reshape(b, n, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
            q = q[:, :, :nq]
        else:  # queries of the first nq tokens only; keys and values of all
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :nq], w[:c], None if bias is None else bias[:c])
            q = q.reshape(b, nq, h, hd).transpose(1, 2)
            kv = F.linear(x, w[c:], None if bias is None else bias[c:])
            k, v = kv.reshape(b, n, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
        if not isinstance(self.qkv, nn.Linear) and q.device.type == "cpu" and _CPU_BF16:
            # int8 inference (quantised linear layers): the attention products, then the largest fp32
            # cost, in bf16 (see the module docstring)
            out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
        else:
            out = attend(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, nq, c)))


def vit_blocks(
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    eps: float = 1e-6,
) -> nn.Sequential:
    """``depth`` pre-norm timm ``Block`` s (LayerNorm ``eps``, GELU MLP, linearly rising drop-path)
    with :class:`Attention`."""
    dpr = torch.linspace(
        0, drop_path_rate, depth, device="cpu"
    ).tolist()  # also when built on the meta device
    blocks = []
    for i in range(depth):
        blk = Block(
            embed_dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=dpr[i],
            norm_layer=partial(nn.LayerNorm, eps=eps),
        )
        blk.attn = Attention(blk.attn.qkv, blk.attn.proj, num_heads, attn_drop_rate, drop_rate)
        blocks.append(blk)
    return nn.Sequential(*blocks)


def block_prefix(block: Block, x: torch.Tensor, n: int) -> torch.Tensor:
    """``block(x)[:, :n]``, computing queries, attention output and MLP for those ``n`` tokens only."""
    y = x[:, :n] + block.drop_path1(block.ls1(block.attn(block.norm1(x), num_queries=n)))
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))
