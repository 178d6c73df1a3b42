"""The model-family contract (sed.models.base): every model records its constructor's arguments itself and a
checkpoint rebuilds it exactly; every family declares a CPU test size; one protocol tells each kind of model.

Parametrized over one test size per family (``family_test_sizes()``): a family's sizes share its code; the
kwargs round trip runs over every registered name, on the meta device."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from torch import nn

from sed.checkpoint import save_model
from sed.errors import CheckpointError
from sed.models import create_model, list_models, load_model
from sed.models.base import DescribedModel, is_clip_model, is_seld_model, is_trainable_clip_model
from sed.models.family import families, family_of_model, family_test_sizes, tiny_kwargs
from sed.models.loading import check_kind, model_kind

TEST_SIZES = family_test_sizes()
LABELS = ["a", "b", "c"]


def _one_second(model: nn.Module, batch: int = 2) -> torch.Tensor:
    n = int(model.sample_rate)
    gen = torch.Generator().manual_seed(1)
    return torch.randn((batch, 4, n) if is_seld_model(model) else (batch, n), generator=gen) * 0.1


def _constructor_arguments(model: nn.Module) -> set[str]:
    """The named arguments of every ``__init__`` a model's class runs (its own and its bases')."""
    out = set()
    for cls in type(model).__mro__:
        if issubclass(cls, DescribedModel) and "__init__" in cls.__dict__:
            params = list(inspect.signature(cls.__init__).parameters.values())[1:]
            out |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return out


def test_every_registered_model_has_a_family_with_a_test_size():
    assert {family_of_model(n).test_size for n in list_models()} == set(TEST_SIZES)
    assert len(TEST_SIZES) == len(families()) >= 9
    assert {"cnn_tiny", "tcn_tiny", "ast_micro"} <= set(TEST_SIZES)


@pytest.mark.parametrize("name", TEST_SIZES)
def test_a_family_test_size_is_small_and_takes_one_second(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **tiny_kwargs(name)).eval()
    assert sum(p.numel() for p in model.parameters()) < 2e6
    if is_clip_model(model):
        assert model.clip_samples <= model.sample_rate  # 1 s of audio fills the clip
    with torch.no_grad():
        out = model(_one_second(model))
    assert (
        out.shape[0] == 2 and out.shape[-1] == model.output_dim
        if is_seld_model(model)
        else out.shape == (2, 3)
    )


@pytest.mark.parametrize("name", TEST_SIZES)
def test_a_checkpoint_rebuilds_every_family_exactly(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, labels=LABELS, **tiny_kwargs(name)).eval()
    loaded, desc = load_model(save_model(tmp_path / f"{name}.pt", model))
    assert type(loaded) is type(model)
    assert desc["model_kwargs"] == model.sed_kwargs() == loaded.sed_kwargs() == loaded.sed_config["kwargs"]
    before, after = model.state_dict(), loaded.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    x = _one_second(model)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_size_records_all_its_constructor_arguments(name):
    with torch.device("meta"):
        model = create_model(name, **tiny_kwargs(name))
        clone = create_model(name, **model.sed_kwargs())
    kwargs = model.sed_kwargs()
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert _constructor_arguments(model) == set(kwargs)  # every argument, defaults applied, nothing else
    assert clone.sed_kwargs() == kwargs
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_the_base_records_arguments_defaults_and_derived_values():
    class Base(DescribedModel, nn.Module):
        def __init__(self, num_classes: int = 2, rate: int = 16000, labels=None):
            super().__init__()
            self.num_classes = num_classes
            self.labels = labels

    class Sub(Base):
        def __init__(self, num_classes: int = 2, widths=(4, 8), depth: int | None = None, **kwargs):
            super().__init__(num_classes=num_classes, **kwargs)
            if depth is not None:
                self.record_kwargs(widths=list(widths)[:depth], depth=None)  # the derived value, not the call

    model = Sub(3, rate=np.int64(8000), depth=1, labels=["x", "y", "z"])
    assert model.sed_kwargs() == {
        "num_classes": 3,
        "widths": [4],
        "depth": None,
        "rate": 8000,
        "labels": ["x", "y", "z"],
    }
    assert type(model.sed_kwargs()["rate"]) is int
    assert Sub(**model.sed_kwargs()).sed_kwargs() == model.sed_kwargs()
    assert Sub().sed_kwargs() == {
        "num_classes": 2,
        "widths": [4, 8],
        "depth": None,
        "rate": 16000,
        "labels": None,
    }
    assert list(inspect.signature(Sub).parameters) == ["num_classes", "widths", "depth", "kwargs"]


@pytest.mark.parametrize("name", TEST_SIZES)
def test_one_protocol_tells_each_kind(name):
    with torch.device("meta"):
        model = create_model(name, **tiny_kwargs(name))
    seld = family_of_model(name).length_policy == "frames"
    assert (is_seld_model(model), is_clip_model(model), model_kind(model)) == (
        (True, False, "seld") if seld else (False, True, "clip")
    )
    assert is_trainable_clip_model(model) == (not seld and family_of_model(name).length_policy != "backbone")
    check_kind(model, model_kind(model))
    with pytest.raises(
        CheckpointError, match="this command takes a clip classifier" if seld else "takes a SELD"
    ):
        check_kind(model, "clip" if seld else "seld", "m.pt")


def test_a_module_of_neither_kind_is_refused_by_every_verb():
    with pytest.raises(
        CheckpointError,
        match=r"^m\.pt: neither a clip classifier nor a SELD model \(Linear\); "
        "no sedkit command takes it, this command takes a clip classifier$",
    ):
        check_kind(nn.Linear(2, 2), "clip", "m.pt")
