"""The model registry: names, create_model, sed_config round trip, a forward over every model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sed.models import create_model, is_model, list_models, register_model
from sed.models import registry as reg
from sed.models.ast import AST_SIZES
from sed.models.base import is_seld_model
from sed.models.family import tiny_kwargs


def test_list_models_has_the_ast_sizes():
    names = list_models()
    assert {"ast_base", "ast_small", "ast_tiny", "ast_micro"} <= set(names)
    assert names == sorted(names)
    assert list_models("ast_t*") == ["ast_tiny"]
    assert is_model("ast_base") and not is_model("ast_huge")


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'ast_huge'.*ast_base.*ast_micro"):
        create_model("ast_huge")


def test_num_classes_and_default():
    assert create_model("ast_micro", input_tdim=32).head[1].out_features == 527
    model = create_model("ast_micro", num_classes=7, input_tdim=32)
    assert model.head[1].out_features == 7 and model.num_classes == 7
    assert model.sed_config["name"] == "ast_micro"
    assert model.sed_config["kwargs"]["num_classes"] == 7


def test_sed_config_round_trip_rebuilds_identical_model():
    torch.manual_seed(0)
    model = create_model(
        "ast_micro",
        num_classes=3,
        input_tdim=64,
        tstride=12,
        num_mel_bins=64,
        mean=-5.0,
        std=3.0,
        labels=["a", "b", "c"],
    ).eval()
    cfg = json.loads(json.dumps(model.sed_config))  # JSON-serialisable, survives a round trip
    assert cfg["kwargs"]["input_fdim"] == 64 and cfg["kwargs"]["labels"] == ["a", "b", "c"]
    rebuilt = create_model(cfg["name"], **cfg["kwargs"]).eval()
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert rebuilt.frontend.config() == model.frontend.config() and rebuilt.labels == ["a", "b", "c"]
    rebuilt.load_state_dict(a)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.equal(model(wave), rebuilt(wave))
    assert rebuilt.sed_config == cfg


def test_labels_setter_keeps_sed_config_current():
    model = create_model("ast_micro", num_classes=2, input_tdim=32)
    model.labels = ["dog", "cat"]
    assert model.sed_config["kwargs"]["labels"] == ["dog", "cat"]
    with pytest.raises(ValueError, match="3 labels for a 2-class head"):
        model.labels = ["a", "b", "c"]


def test_pretrained_true_needs_a_default():
    with pytest.raises(ValueError, match="no default pretrained"):
        create_model("ast_micro", pretrained=True)


def test_custom_family_registration():
    @register_model
    def _toy_net(num_classes: int = 2, width: int = 4) -> nn.Module:
        return nn.Linear(width, num_classes)

    try:
        assert "_toy_net" in list_models()
        model = create_model("_toy_net", num_classes=3, width=5)
        assert model.sed_config == {"name": "_toy_net", "kwargs": {"width": 5, "num_classes": 3}}
        with pytest.raises(ValueError, match="does not support pretrained"):
            create_model("_toy_net", pretrained="x.pth")
        with pytest.raises(ValueError, match="already registered"):
            register_model(name="_toy_net")(lambda num_classes=2: nn.Identity())
        with pytest.raises(TypeError, match="JSON-serialisable"):
            create_model("_toy_net", width=torch.tensor(4))
    finally:
        reg._REGISTRY.pop("_toy_net", None)


def test_ast_base_is_the_published_size():
    model = create_model("ast_base", input_tdim=1024)
    assert len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 12 and model.embed_dim == 768
    assert model.pos_embed.shape == (1, 1214, 768) and model.head[1].out_features == 527
    assert 86e6 < sum(p.numel() for p in model.parameters()) < 89e6


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_batch_by_classes(name):
    torch.manual_seed(0)
    # the family's declared test kwargs: 1 s clips, two blocks keep the big transformer sizes fast on CPU;
    # width and heads are the registered ones
    model = create_model(name, num_classes=4, **tiny_kwargs(name)).eval()
    if is_seld_model(model):  # SELD: 4-channel 24 kHz in, multi-ACCDOA out
        with torch.no_grad():
            out = model(torch.randn(2, 4, 24000) * 0.1)
        assert out.shape == (2, 10, 3 * 3 * 4) and torch.isfinite(out).all()
        return
    if name in AST_SIZES:
        assert model.embed_dim == AST_SIZES[name]["embed_dim"]
        assert model.blocks[0].attn.num_heads == AST_SIZES[name]["num_heads"]
    with torch.no_grad():
        out = model(torch.randn(2, 8000) * 0.1)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
