"""sed's ViT blocks: timm's numbers in fp32, the CPU reduced-precision attention, the prefix-only last
block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention as TimmAttention

from sed.models import create_model
from sed.models.transformer import Attention, attend, block_prefix, vit_blocks


def _qkv(b=2, h=3, n=150, d=32, nq=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq or n, d, generator=g)
    k, v = torch.randn(b, h, n, d, generator=g), torch.randn(b, h, n, d, generator=g)
    return q, k, v


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            norm_scale = p.dim() == 1 and "norm" in name and name.endswith("weight")
            p.copy_(
                1 + 0.2 * torch.randn(p.shape, generator=g)
                if norm_scale
                else 0.1 * torch.randn(p.shape, generator=g)
            )


def test_attention_equals_timm_attention():
    timm_attn = TimmAttention(48, num_heads=4, qkv_bias=True).eval()
    _randomise(timm_attn)
    ours = Attention(timm_attn.qkv, timm_attn.proj, num_heads=4).eval()
    assert list(dict(ours.named_parameters())) == ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    x = torch.randn(2, 37, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_attn(x), rtol=0, atol=1e-6)
        # queries of the first 5 tokens only: the first 5 rows of the full output
        torch.testing.assert_close(ours(x, num_queries=5), timm_attn(x)[:, :5], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        Attention(torch.nn.Linear(48, 96), torch.nn.Linear(48, 48), num_heads=4)


def test_attend_fp32_is_sdpa():
    q, k, v = _qkv(nq=7)
    assert torch.equal(attend(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("nq", [None, 2])
def test_attend_bf16_on_cpu_is_close_to_fp32(nq):
    q, k, v = _qkv(nq=nq)
    ref = F.scaled_dot_product_attention(q, k, v)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    with torch.inference_mode():
        out = attend(qb, kb, vb)
        fused = F.scaled_dot_product_attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    err, fused_err = (out.float() - ref).abs().max().item(), (fused.float() - ref).abs().max().item()
    # bf16 keeps 8 bits: the scores are rounded before the softmax, so the error is a few times
    # that of PyTorch's fused kernel (fp32 scores), and far below the outputs' spread (~0.1-1)
    assert err < 0.05 and err < 8 * fused_err + 1e-2, (err, fused_err)


def test_attend_with_autograd_takes_sdpa_and_its_gradients():
    q, k, v = (t.bfloat16().requires_grad_() for t in _qkv())
    out = attend(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_block_prefix_is_the_head_of_the_full_block():
    blocks = vit_blocks(48, depth=2, num_heads=4, mlp_ratio=2.0).eval()
    _randomise(blocks)
    x = torch.randn(3, 40, 48)
    with torch.no_grad():
        full = blocks(x)
        pref = block_prefix(blocks[1], blocks[0](x), 2)
    assert pref.shape == (3, 2, 48)
    torch.testing.assert_close(pref, full[:, :2], rtol=0, atol=2e-6)


def test_ast_pooled_path_matches_the_full_forward_and_its_gradients():
    model = create_model("ast_micro", num_classes=3, input_tdim=128).eval()
    assert all(isinstance(blk.attn, Attention) for blk in model.blocks)
    _randomise(model)
    fbank = torch.randn(2, 128, 128)
    with torch.no_grad():
        pooled_full = model.forward_fbank_features(fbank)[0]
        torch.testing.assert_close(model.forward_fbank_pooled(fbank), pooled_full, rtol=0, atol=2e-6)
        torch.testing.assert_close(model.forward_fbank(fbank), model.head(pooled_full), rtol=0, atol=5e-6)
    grads = []
    for pooled_fn in (
        lambda: model.forward_fbank_features(fbank)[0],
        lambda: model.forward_fbank_pooled(fbank),
    ):
        model.zero_grad()
        model.head(pooled_fn()).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].numel() == grads[1].numel()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_ast_bf16_autocast_on_cpu_agrees_with_fp32():
    model = create_model("ast_micro", num_classes=5, input_tdim=128).eval()
    _randomise(model)
    wave = torch.randn(4, 16000) * 0.1
    with torch.inference_mode():
        ref = model(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(wave)
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert torch.equal(out.float().argmax(-1), ref.argmax(-1))
