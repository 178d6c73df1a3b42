"""Patch-Mix (spec ast-patchmix-icbhi.md §2.3) and AST's forward_patch_mix."""

from __future__ import annotations

import pytest
import torch

from sed.augment.patch_mix import patch_mix, sample_lam
from sed.models import create_model


def _swapped(x, out, index):
    """Patch positions taken from the partner, checking every position is either kept or swapped
    for the WHOLE batch."""
    kept = (out == x).all(dim=2).all(dim=0)
    from_partner = (out == x[index]).all(dim=2).all(dim=0)
    assert bool((kept | from_partner).all())
    return torch.nonzero(from_partner & ~kept).flatten()


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.55, 0.999, 1.0])
def test_shared_mask_from_partner(lam):
    b, n, d = 6, 23, 5
    x = torch.randn(b, n, d)
    y = torch.arange(b) % 3
    before = x.clone()
    g = torch.Generator().manual_seed(7)
    out, y_a, y_b, lam2, index = patch_mix(x, y, generator=g, lam=lam)
    assert torch.equal(x, before)  # out of place
    assert sorted(index.tolist()) == list(range(b)) and not torch.equal(index, torch.arange(b))
    num = int(n * (1 - lam))
    pos = _swapped(x, out, index)
    assert len(pos) == num and lam2 == 1 - num / n
    movers = index != torch.arange(b)
    for i in torch.nonzero(movers).flatten():  # the same positions in every sample, values from index[i]
        changed = torch.nonzero((out[i] != x[i]).any(dim=1)).flatten()
        assert torch.equal(changed, pos)
        assert torch.equal(out[i, pos], x[index[i], pos])
    assert torch.equal(y_a, y) and torch.equal(y_b, y[index])


def test_lam_draws_and_determinism():
    x, y = torch.randn(4, 50, 3), torch.arange(4)
    lams = [patch_mix(x, y, beta=1.0)[3] for _ in range(400)]
    assert all(abs((1 - v) * 50 - round((1 - v) * 50)) < 1e-9 for v in lams)  # lam = 1 - num_mask / N
    assert 0.44 < sum(lams) / len(lams) < 0.56 and min(lams) < 0.1 and max(lams) > 0.9  # Beta(1, 1) = U(0, 1)
    peaked = [sample_lam(50.0) for _ in range(200)]
    assert all(0.3 < v < 0.7 for v in peaked)
    out, _, _, lam, _ = patch_mix(x, y, beta=0.0)
    assert lam == 1.0 and torch.equal(out, x)
    a = patch_mix(x, y, generator=torch.Generator().manual_seed(3))
    b = patch_mix(x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and a[3] == b[3] and torch.equal(a[4], b[4])


def test_gradient_reaches_every_token():
    x = torch.randn(5, 12, 4, requires_grad=True)
    out = patch_mix(x, torch.arange(5), lam=0.4)[0]
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # index is a permutation: each token used once


def test_time_domain_swaps_whole_columns():
    b, f, t, d = 4, 3, 7, 2
    x = torch.randn(b, f * t, d)
    out, _, _, lam, index = patch_mix(
        x, torch.arange(b), time_domain=True, grid=(f, t), lam=0.5, generator=torch.Generator().manual_seed(1)
    )
    num = int(t * 0.5)
    assert lam == 1 - num / t
    pos = _swapped(x, out, index)
    cols = sorted({int(p) % t for p in pos})
    assert len(cols) == num and sorted(int(p) for p in pos) == sorted(
        r * t + c for r in range(f) for c in cols
    )
    with pytest.raises(ValueError, match="grid"):
        patch_mix(x, torch.arange(b), time_domain=True, grid=(2, 7))


def test_bad_inputs():
    with pytest.raises(ValueError):
        patch_mix(torch.randn(4, 5), torch.arange(4))
    with pytest.raises(ValueError):
        patch_mix(torch.randn(4, 5, 2), torch.arange(3))


def test_ast_forward_patch_mix_mixes_before_tokens_and_pos_embed():
    model = create_model("ast_micro", num_classes=4, input_tdim=128).eval()
    with torch.no_grad():  # random weights everywhere, so that no token is negligible
        for name, p in model.named_parameters():
            p.copy_(
                1 + 0.2 * torch.randn_like(p) if name.endswith("norm1.weight") else 0.2 * torch.randn_like(p)
            )
    fbank, y = torch.randn(3, 128, 128), torch.tensor([0, 1, 2])
    seen = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        logits, pooled, y_a, y_b, lam, index = model.forward_patch_mix(
            fbank, y, generator=torch.Generator().manual_seed(0)
        )
        patches = model.patchify(fbank)
        mixed, _, _, lam2, index2 = patch_mix(patches, y, generator=torch.Generator().manual_seed(0))
        plain_pooled = model.forward_fbank_features(fbank)[0]
    hook.remove()
    assert lam == lam2 and lam < 1 and torch.equal(index, index2) and torch.equal(y_b, y[index])
    tokens = seen[0]
    n = model.num_patches
    assert tokens.shape == (3, n + 2, model.embed_dim)
    # cls / dist are never mixed; patches = mixed patch tokens + their own position embedding
    torch.testing.assert_close(tokens[:, 0], (model.cls_token[0, 0] + model.pos_embed[0, 0]).expand(3, -1))
    torch.testing.assert_close(tokens[:, 1], (model.dist_token[0, 0] + model.pos_embed[0, 1]).expand(3, -1))
    torch.testing.assert_close(tokens[:, 2:], mixed + model.pos_embed[:, 2:])
    pos = _swapped(patches, mixed, index)
    assert len(pos) == int(n * (1 - lam)) == round(n * (1 - lam))
    torch.testing.assert_close(logits, model.head(pooled))
    assert not torch.allclose(pooled, plain_pooled)
    # the plain forward is unchanged by the new path
    torch.testing.assert_close(model.forward_from_features(fbank), model.head(plain_pooled))
