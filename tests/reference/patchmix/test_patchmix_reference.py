"""sed's Patch-Mix against the Patch-Mix repository's ``ASTModel.patch_mix`` (fixtures: generate.py, README.md).

Per case: the same tokens and labels, the reference's random choices (``lam`` drawn, partner ``index``, mixed
patches or time columns) given to :func:`sed.augment.patch_mix.patch_mix`, which must give the reference's
mixed tokens, ``y_a``, ``y_b`` and the ``lam`` it returns. A second test gives sed only ``lam`` and a
generator seeded as the reference seeded torch's global RNG: sed then draws the same partner and the same
patches (the draws, ``randperm(B)`` then ``randperm(width)``, are the reference's, in its order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.augment.patch_mix import patch_mix
from tests.reference import common
from tests.reference.patchmix import generate

HERE = Path(__file__).resolve().parent
REF = dict(np.load(HERE / "outputs.npz"))
CASES = json.loads((HERE / "cases.json").read_text(encoding="utf-8"))


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(generate.tokens(name)), torch.from_numpy(generate.labels(name))


def _check(name: str, got) -> None:
    c = CASES[name]
    out, y_a, y_b, lam, index = got
    assert index.tolist() == c["index"]
    assert y_a.tolist() == c["y_a"] and y_b.tolist() == c["y_b"]
    assert lam == pytest.approx(c["lam"], abs=1e-12)
    common.assert_close(out, REF[name], f"mixed tokens of {name}")
    assert torch.equal(out, torch.from_numpy(REF[name]))  # a copy of tokens: exact


def test_fixture_covers_the_cases():
    assert {c["time_domain"] for c in CASES.values()} == {False, True}
    assert any(c["num_mask"] == 0 for c in CASES.values()) and any(c["num_mask"] > c["patches"] // 2
                                                                    for c in CASES.values())
    assert all(0 < c["num_mask"] for c in CASES.values() if c["time_domain"])
    assert any(c["mix_beta"] == 0 for c in CASES.values())


@pytest.mark.parametrize("name", list(generate.CASES))
def test_given_choices(name):
    """The reference's lam, index and mask given: the same mixed tokens, labels and lam."""
    c = CASES[name]
    x, y = _inputs(name)
    before = x.clone()
    got = patch_mix(x, y, c["mix_beta"], lam=c["lam_drawn"], index=torch.tensor(c["index"]),
                    mask=torch.tensor(c["mask"], dtype=torch.long), time_domain=c["time_domain"], grid=tuple(c["grid"]))
    _check(name, got)
    assert torch.equal(x, before)  # sed mixes out of place (the reference writes into its input)


@pytest.mark.parametrize("name", list(generate.CASES))
def test_given_mask_only(name):
    """Without ``lam``: the mask alone fixes num_mask, and so the returned lam."""
    c = CASES[name]
    x, y = _inputs(name)
    got = patch_mix(x, y, c["mix_beta"], index=torch.tensor(c["index"]), mask=torch.tensor(c["mask"], dtype=torch.long),
                    time_domain=c["time_domain"], grid=tuple(c["grid"]))
    _check(name, got)


@pytest.mark.parametrize("name", list(generate.CASES))
def test_same_seed_same_draws(name):
    """``lam`` given, the rest drawn from a generator seeded like the reference's ``torch.manual_seed``."""
    c = CASES[name]
    x, y = _inputs(name)
    g = torch.Generator().manual_seed(c["seed"])
    got = patch_mix(x, y, c["mix_beta"], g, lam=c["lam_drawn"], time_domain=c["time_domain"], grid=tuple(c["grid"]))
    _check(name, got)


def test_inconsistent_choices_are_refused():
    c = CASES["icbhi_b4"]
    x, y = _inputs("icbhi_b4")
    with pytest.raises(ValueError, match="mask has"):
        patch_mix(x, y, lam=0.9, mask=torch.tensor(c["mask"]))
    with pytest.raises(ValueError, match="index must"):
        patch_mix(x, y, lam=0.5, index=torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="mask must"):
        patch_mix(x, y, mask=torch.tensor([0, 0]))
