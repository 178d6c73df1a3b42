"""sed's Patch-Mix against the Patch-Mix repository's ``ASTModel.patch_mix`` (fixtures: generate.py,
README.md).

Per case: the same tokens and labels, the reference's random choices (``lam`` drawn, partner ``index``, mixed
patches or time columns) given to :func:`sed.augment.patch_mix.patch_mix`, which must give the reference's
mixed tokens, ``y_a``, ``y_b`` and the ``lam`` it returns. A second test gives sed only ``lam`` and a
generator seeded as the reference seeded torch's global RNG: sed then draws the same partner and the same
patches (the draws, ``randperm(B)`` then ``randperm(width)``, are the reference's, in its order).

The Patch-Mix model: a DeiT-tiny-sized Patch-Mix AST is written in the release layout of the reference's
``save_model`` (``best.pth``: ``args``, ``model``, ``optimizer``, ``epoch``, ``classifier``), loaded through
:func:`sed.models.loading.load_model`, and run on the regimes' clips after the ICBHI data stage
(:func:`sed.data.corpora.icbhi.fix_length`: cut or repeat-pad to 8 s, as the reference's
``cut_pad_sample_torchaudio``): pooled embedding and logits (the reference's ``classifier`` on ``model(x)``),
and the Patch-Mix forward.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.augment.patch_mix import patch_mix
from sed.data.corpora.icbhi import fix_length
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
    assert any(c["num_mask"] == 0 for c in CASES.values()) and any(
        c["num_mask"] > c["patches"] // 2 for c in CASES.values()
    )
    assert all(0 < c["num_mask"] for c in CASES.values() if c["time_domain"])
    assert any(c["mix_beta"] == 0 for c in CASES.values())


@pytest.mark.parametrize("name", list(generate.CASES))
def test_given_choices(name):
    """The reference's lam, index and mask given: the same mixed tokens, labels and lam."""
    c = CASES[name]
    x, y = _inputs(name)
    before = x.clone()
    got = patch_mix(
        x,
        y,
        c["mix_beta"],
        lam=c["lam_drawn"],
        index=torch.tensor(c["index"]),
        mask=torch.tensor(c["mask"], dtype=torch.long),
        time_domain=c["time_domain"],
        grid=tuple(c["grid"]),
    )
    _check(name, got)
    assert torch.equal(x, before)  # sed mixes out of place (the reference writes into its input)


@pytest.mark.parametrize("name", list(generate.CASES))
def test_given_mask_only(name):
    """Without ``lam``: the mask alone fixes num_mask, and so the returned lam."""
    c = CASES[name]
    x, y = _inputs(name)
    got = patch_mix(
        x,
        y,
        c["mix_beta"],
        index=torch.tensor(c["index"]),
        mask=torch.tensor(c["mask"], dtype=torch.long),
        time_domain=c["time_domain"],
        grid=tuple(c["grid"]),
    )
    _check(name, got)


@pytest.mark.parametrize("name", list(generate.CASES))
def test_same_seed_same_draws(name):
    """``lam`` given, the rest drawn from a generator seeded like the reference's ``torch.manual_seed``."""
    c = CASES[name]
    x, y = _inputs(name)
    g = torch.Generator().manual_seed(c["seed"])
    got = patch_mix(
        x, y, c["mix_beta"], g, lam=c["lam_drawn"], time_domain=c["time_domain"], grid=tuple(c["grid"])
    )
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


# ---------------------------------------------------------------------------- the Patch-Mix model
MANIFEST = json.loads((HERE / "weights.json").read_text(encoding="utf-8"))
REGIMES = generate.regimes()


def _release(with_args: bool = True) -> dict:
    """The contents of the reference's ``best.pth`` (util/misc.py ``save_model``) from the manifest."""
    tensors = common.tensors_from(MANIFEST)
    state = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}
    classifier = {k[len("classifier.") :]: v for k, v in tensors.items() if k.startswith("classifier.")}
    args = argparse.Namespace(
        **{k: np.asarray(v) if k == "class_nums" else v for k, v in MANIFEST["args"].items()}
    )
    optimizer = torch.optim.Adam(
        [torch.nn.Parameter(v.clone()) for v in state.values()], lr=5e-5, weight_decay=1e-6
    ).state_dict()
    out = {
        "args": args,
        "model": state,
        "optimizer": optimizer,
        "epoch": MANIFEST["epoch"],
        "classifier": classifier,
    }
    if not with_args:
        del out["args"]
    return out


def _load(tmp_path_factory, with_args: bool):
    from sed.models.loading import load_model

    path = tmp_path_factory.mktemp("patchmix") / "best.pth"
    torch.save(_release(with_args), path)
    return load_model(path)[0].eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """sed's model from the release file as the reference writes it."""
    return _load(tmp_path_factory, True)


@pytest.fixture(scope="module")
def model_without_args(tmp_path_factory):
    """The same file without its pickled ``args`` (an ``argparse.Namespace`` holding a numpy array)."""
    return _load(tmp_path_factory, False)


def _waves(regime: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The regime's clips after the ICBHI data stage, as one zero-padded batch with lengths."""
    clips = [
        fix_length(torch.from_numpy(common.signal(s, generate.SAMPLE_RATE, seed)[0]), generate.TARGET)
        for s, seed in REGIMES[regime]
    ]
    lengths = torch.tensor([c.numel() for c in clips])
    return torch.stack(
        [torch.nn.functional.pad(c, (0, int(lengths.max()) - c.numel())) for c in clips]
    ), lengths


def _check_forward(m, regime: str) -> None:
    wave, lengths = _waves(regime)
    with torch.no_grad():
        embed, logits = m.embed(wave, lengths), m(wave, lengths)
    common.assert_close(embed, REF[f"model_embed_{regime}"], f"pooled embedding, {regime}")
    common.assert_close(logits, REF[f"model_logits_{regime}"], f"logits, {regime}")


@pytest.mark.parametrize("regime", list(REGIMES))
def test_model_forward(model, regime):
    _check_forward(model, regime)


def test_model_forward_without_args(model_without_args):
    _check_forward(model_without_args, "batch")


@pytest.mark.parametrize("domain", ["patches", "time"])
def test_model_patch_mix_forward(model, domain):
    """Tokens mixed after the patch embedding, before cls/dist and pos_embed, with the reference's choices."""
    c = MANIFEST["patch_mix"][domain]
    wave, lengths = _waves("batch")
    y = torch.tensor(generate.MIX_LABELS)
    with torch.no_grad():
        tokens = model.patchify(model.features(wave, lengths))
        mixed, y_a, y_b, lam, index = patch_mix(
            tokens,
            y,
            lam=c["lam_drawn"],
            index=torch.tensor(c["index"]),
            mask=torch.tensor(c["mask"]),
            time_domain=domain == "time",
            grid=model.grid,
        )
        pooled = model.forward_pooled(mixed)
        logits = model.head(pooled)
    assert (y_a.tolist(), y_b.tolist(), index.tolist()) == (c["y_a"], c["y_b"], c["index"])
    assert lam == pytest.approx(c["lam"], abs=1e-12)
    common.assert_close(pooled, REF[f"model_mix_{domain}_embed"], f"Patch-Mix pooled embedding, {domain}")
    common.assert_close(logits, REF[f"model_mix_{domain}_logits"], f"Patch-Mix logits, {domain}")
