"""SELD models (seld.md 3.2, 9): ResNet-Conformer and the DCASE2023 baseline CRNN."""

from __future__ import annotations

import json

import pytest
import torch

from sed.augment.acs import RandomACS
from sed.data.modules.seld_dataset import StarssDataset, collate
from sed.data.synth.corpora import make_starss
from sed.losses.adpit import adpit_loss
from sed.models import create_model, list_models
from sed.models import resnet_conformer as _rc  # noqa: F401  (registers the SELD models)
from sed.models import seldnet as _sn  # noqa: F401
from sed.models.resnet_conformer import ResNetConformer
from sed.models.seldnet import SELDnet

SR = 24000
TINY = ["resnet_conformer_tiny", "seldnet_baseline"]


def _audio(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, 4, round(seconds * SR), generator=g)


def test_registered():
    assert {"resnet_conformer", "resnet_conformer_tiny", "seldnet_baseline"} <= set(list_models())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("fmt", ["foa", "mic"])
@pytest.mark.parametrize("with_distance", [False, True])
def test_output_shape_five_seconds(name, fmt, with_distance):
    model = create_model(name, num_classes=13, fmt=fmt, with_distance=with_distance).eval()
    assert model.in_channels == (7 if fmt == "foa" else 10) and model.channel_layout == fmt
    assert (
        model.sample_rate == 24000
        and model.label_frame_samples == 2400
        and model.with_distance is with_distance
    )
    with torch.no_grad():
        out = model(_audio(5.0))
    assert out.shape == (2, 50, 156 if with_distance else 117) and torch.isfinite(out).all()
    xyz = out.reshape(2, 50, 3, 4 if with_distance else 3, 13)[..., :3, :]
    assert xyz.abs().max() <= 1.0


@pytest.mark.parametrize("name", TINY)
def test_label_frames_follow_the_input_length(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(_audio(1.2, batch=1)).shape == (1, 12, 27)
        assert model(_audio(0.3, batch=1)[..., : 3 * 2400 + 1000]).shape == (1, 3, 27)
        assert model(_audio(0.1, batch=1)[0]).shape == (1, 1, 27)  # [4, T] is a batch of one
    assert model.num_label_frames(3 * 2400 + 1000) == 3
    with pytest.raises(ValueError, match="less than one 2400-sample label frame"):
        model(_audio(0.05, batch=1))


@pytest.mark.parametrize("time_pool, frames", [("after", 250), ("resnet", 50)])
def test_time_pool_position_sets_the_conformer_rate(time_pool, frames):
    model = create_model("resnet_conformer_tiny", time_pool=time_pool).eval()
    seen = []
    handle = model.conformer.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        out = model(_audio(5.0))
    handle.remove()
    assert seen == [(2, frames, 32)] and model.conformer_frames(5 * SR) == frames
    assert out.shape == (2, 50, 117)


def test_resnet_conformer_default_architecture():
    model = create_model("resnet_conformer")
    assert [s[0].conv1.out_channels for s in model.stages] == [64, 128, 256, 512]
    assert all(len(s) == 2 for s in model.stages)
    assert [tuple(p.kernel_size) for p in model.pools] == [(1, 2)] * 4  # frequency-only pooling
    layers = model.conformer.conformer_layers
    assert len(layers) == 8 and layers[0].self_attn.embed_dim == 256 and layers[0].self_attn.num_heads == 8
    assert layers[0].ffn1.sequential[1].out_features == 1024
    assert layers[0].conv_module.sequential[2].kernel_size == (31,)
    assert model.head.out_features == 117 and model.time_pool == "after"
    assert 20e6 < sum(p.numel() for p in model.parameters()) < 27e6


def test_seldnet_is_the_dcase2023_baseline():
    model = create_model("seldnet_baseline")
    n = sum(p.numel() for p in model.parameters())
    assert n == 737_141 and abs(n - 0.74e6) / 0.74e6 < 0.02
    pools = [tuple(m.kernel_size) for m in model.conv_block_list if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [(5, 4), (1, 4), (1, 2)]
    assert model.gru.hidden_size == 128 and model.gru.num_layers == 2 and model.gru.bidirectional
    assert [m.num_heads for m in model.mhsa_block_list] == [8, 8]
    keys = set(model.state_dict())  # the official seldnet_model.py names load into this model
    for k in (
        "conv_block_list.0.conv.weight",
        "conv_block_list.6.bn.running_var",
        "gru.weight_hh_l1_reverse",
        "mhsa_block_list.1.in_proj_weight",
        "layer_norm_list.0.weight",
        "fnn_list.0.weight",
        "fnn_list.1.bias",
    ):
        assert k in keys
    assert model.fnn_list[-1].out_features == 117
    assert (
        sum(p.numel() for p in create_model("seldnet_baseline", with_distance=True).parameters())
        == n + 128 * 39 + 39
    )


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_forward_features_equals_forward_and_applies_the_standardiser(name, fmt):
    model = create_model(name, fmt=fmt).eval()
    audio = _audio(1.0)
    feats = model.features(audio)
    assert feats.shape == (2, model.in_channels, 50, 64)
    with torch.no_grad():
        before = model(audio)
        model.standardizer.fit([feats])
        out = model(audio)
        torch.testing.assert_close(model.forward_features(feats), out)
        torch.testing.assert_close(model.forward_from_features(feats), out)
    assert not torch.allclose(before, out, atol=1e-4)
    with pytest.raises(ValueError, match="expected .* features"):
        model.forward_features(feats[:, :5])


@pytest.mark.parametrize("name", TINY)
def test_sed_config_round_trip(name):
    model = create_model(name, num_classes=3, fmt="mic", with_distance=True, labels=["a", "b", "c"]).eval()
    model.standardizer.fit([model.features(_audio(0.5))])
    cfg = json.loads(json.dumps(model.sed_config))
    assert cfg["kwargs"]["fmt"] == "mic" and cfg["kwargs"]["labels"] == ["a", "b", "c"]
    rebuilt = create_model(cfg["name"], **cfg["kwargs"]).eval()
    rebuilt.load_state_dict(model.state_dict())
    audio = _audio(0.5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(audio), model(audio))
    model.labels = ["x", "y", "z"]
    assert model.sed_config["kwargs"]["labels"] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="2 labels for a 3-class head"):
        model.labels = ["a", "b"]


def test_distance_block_is_not_squashed():
    raw = torch.full((1, 2, 3 * 4 * 2), 3.0)
    raw.view(1, 2, 3, 4, 2)[..., 3, 1] = -2.0
    ident = ResNetConformer(
        num_classes=2,
        with_distance=True,
        channels=(4, 4),
        freq_pool=(2, 2),
        d_model=8,
        num_layers=1,
        num_heads=2,
        kernel_size=3,
    )
    v = ident.activate(raw).view(1, 2, 3, 4, 2)
    assert torch.allclose(v[..., :3, :], torch.tanh(torch.tensor(3.0)).expand(1, 2, 3, 3, 2))
    assert (v[..., 3, 0] == 3.0).all() and (v[..., 3, 1] == -2.0).all()
    relu = (
        SELDnet(num_classes=2, with_distance=True, distance_activation="relu")
        .activate(raw)
        .view(1, 2, 3, 4, 2)
    )
    assert (relu[..., 3, 0] == 3.0).all() and (relu[..., 3, 1] == 0.0).all()
    linear = SELDnet(num_classes=2, with_distance=True, doa_activation="identity").activate(raw)
    assert torch.equal(linear, raw)
    with pytest.raises(ValueError, match="time_pool"):
        create_model("resnet_conformer_tiny", time_pool="middle")


@pytest.fixture(scope="module")
def starss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss")
    make_starss(root, files_per_split=1, duration=10.0, num_classes=4, fmt="both")
    return root


SMALL_SELDNET = {"nb_cnn2d_filt": 16, "rnn_size": 32, "fnn_size": 32, "nb_heads": 4}


@pytest.mark.parametrize(
    "name, fmt, kwargs", [("resnet_conformer_tiny", "foa", {}), ("seldnet_baseline", "mic", SMALL_SELDNET)]
)
def test_trains_with_acs_and_the_loss_falls(starss_root, name, fmt, kwargs):
    torch.manual_seed(0)
    data = StarssDataset(starss_root, "dev-train", fmt=fmt, num_classes=4, sequence_seconds=2.0)
    batch = collate([data[i] for i in range(len(data))])
    assert batch["audio"].shape == (5, 4, 2 * SR) and batch["target"].shape == (5, 20, 6, 4, 4)
    assert batch["target"][:, :, :, 0].sum() > 0
    model = create_model(name, num_classes=4, fmt=fmt, **kwargs)
    with torch.no_grad():
        model.standardizer.fit([model.features(batch["audio"])])
    acs = RandomACS(p=1.0, fmt=fmt, generator=torch.Generator().manual_seed(0)).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(20):
        audio, target = acs(batch["audio"], batch["target"])
        loss = adpit_loss(model(audio), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
