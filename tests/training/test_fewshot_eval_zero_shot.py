"""``sedkit fewshot-eval --zero-shot`` on a tiny random CLAP: zero_shot and combined score the same episodes
as the prototypes, and their accuracies equal those computed here by hand from the text tower and the
embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sed.cli.main import main
from sed.data.synth.corpora import make_esc50
from sed.models.zeroshot import clap_text
from sed.training.fewshot_eval import (
    class_prompts,
    class_text_prototypes,
    fewshot_eval,
    sample_episodes,
    split_embeddings,
)
from tests.models.clap_dir import make_clap_dir

EPISODE = {"ways": 3, "shots": 2, "queries": 3, "episodes": 8, "seed": 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small CLAP directory, a synthetic ESC-50 (4 classes x 5 clips of 1 s at 16 kHz, names with
    underscores), its data YAML and the split's embeddings."""
    root = tmp_path_factory.mktemp("fszs")
    clap = make_clap_dir(root / "clap", small=True)
    make_esc50(root / "esc", seed=0, num_classes=4, clips_per_class=5, duration=1.0, sample_rate=16000)
    cfg = root / "data.yaml"
    cfg.write_text(
        "data:\n  class_path: sed.data.modules.audio.AudioDataModule\n  init_args:\n"
        f"    source: esc50\n    root: {root / 'esc'}\n    clip_seconds: 1.0\n"
    )
    data = split_embeddings(cfg, clap, split="all", device="cpu")
    return root, clap, cfg, data


def _by_hand(data, text: torch.Tensor, weight: float | None) -> list[float]:
    """Each episode's accuracy: the nearest of its classes' prototypes by cosine, written out."""
    emb = torch.from_numpy(data.embeddings).double()
    text = text.double()
    accs = []
    for ep in sample_episodes(data.labels, **EPISODE):
        protos = text[list(ep.classes)] / text[list(ep.classes)].norm(dim=1, keepdim=True)
        if weight is not None:
            mean = torch.stack([emb[list(s)].mean(0) for s in ep.support])
            protos = weight * protos + (1 - weight) * mean / mean.norm(dim=1, keepdim=True)
        right = 0
        for k, row in enumerate(ep.query):
            for q in row:
                cos = (protos @ emb[q]) / (protos.norm(dim=1) * emb[q].norm())
                right += int(cos.argmax()) == k
        accs.append(right / ep.query.size)
    return accs


def test_zero_shot_and_combined_accuracies_equal_those_computed_by_hand(setup):
    _, clap, _, data = setup
    assert data.embeddings.shape == (20, 16) and "noise_burst" in data.label_names
    prompts = class_prompts(data.label_names)
    assert "This is a sound of noise burst." in prompts  # underscores read as spaces
    text = clap_text(clap).encode(prompts)
    torch.testing.assert_close(class_text_prototypes(clap, data.label_names), text, atol=1e-6, rtol=0)
    table = fewshot_eval(
        data.embeddings,
        data.labels,
        methods=["prototype_cosine", "zero_shot", "combined"],
        text=text,
        text_weight=0.25,
        **EPISODE,
    )
    rows = {r["method"]: r for r in table["methods"]}
    np.testing.assert_allclose(rows["zero_shot"]["accuracies"], _by_hand(data, text, None), atol=1e-12)
    np.testing.assert_allclose(rows["combined"]["accuracies"], _by_hand(data, text, 0.25), atol=1e-12)
    assert table["text_weight"] == 0.25
    # a random CLAP's text barely tells the classes apart (every zero-shot episode is at chance): prototypes
    # planted near the class means make zero_shot's answers vary, and the by-hand check meaningful
    means = torch.from_numpy(np.stack([data.embeddings[data.labels == k].mean(0) for k in range(4)]))
    noise = torch.randn(means.shape, generator=torch.Generator().manual_seed(0)) / means.shape[1] ** 0.5
    planted = means + 0.3 * means.norm(dim=1, keepdim=True) * noise
    got = fewshot_eval(data.embeddings, data.labels, methods=["zero_shot"], text=planted, **EPISODE)
    accs = got["methods"][0]["accuracies"]
    assert len(set(accs)) > 1 and accs == pytest.approx(_by_hand(data, planted, None), abs=1e-12)
    # the same episodes as the prototypes: with weight 0, combined is the cosine prototype
    zero = fewshot_eval(
        data.embeddings, data.labels, methods=["combined"], text=text, text_weight=0.0, **EPISODE
    )
    assert zero["methods"][0]["accuracies"] == rows["prototype_cosine"]["accuracies"]
    with pytest.raises(ValueError, match="need text prototypes"):
        fewshot_eval(data.embeddings, data.labels, methods=["zero_shot"], **EPISODE)
    with pytest.raises(ValueError, match="do not cover"):
        fewshot_eval(data.embeddings, data.labels, methods=["zero_shot"], text=text[:2], **EPISODE)


def _cli(clap, cfg, *extra) -> list[str]:
    return ["fewshot-eval", "--checkpoint", str(clap), "--data", str(cfg), "--split", "all"] + [
        str(a) for k, v in EPISODE.items() for a in (f"--{k}", v)
    ] + [str(a) for a in extra]  # fmt: skip


def test_the_cli_adds_the_rows_and_records_the_prompts(setup, tmp_path, capsys):
    _, clap, cfg, data = setup
    out = tmp_path / "fs.json"
    code = main(
        _cli(clap, cfg, "--zero-shot", "--text-weight", "0.25", "--methods", "prototype_cosine", "--out", out)
    )
    text = capsys.readouterr().out
    assert code == 0 and "zero-shot (text)" in text and "combined (text + prototype)" in text
    assert "0.25 * text + 0.75 * support mean" in text
    table = json.loads(out.read_text())
    assert [r["method"] for r in table["methods"]] == ["prototype_cosine", "zero_shot", "combined"]
    assert table["prompts"]["noise_burst"] == "This is a sound of noise burst."
    enc = clap_text(clap).encode(class_prompts(data.label_names))
    assert table["methods"][1]["accuracies"] == pytest.approx(_by_hand(data, enc, None), abs=1e-12)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--zero-shot", "--checkpoint", "SED"], "--zero-shot: "),
        (["--template", "A {}."], "--template needs --zero-shot"),
        (["--zero-shot", "--template", "none"], "exactly one {}"),
    ],
)
def test_one_line_errors(setup, tmp_path, capsys, extra, message):
    from sed.checkpoint import save_model
    from sed.models import create_model

    _, clap, cfg, _ = setup
    sed_ckpt = save_model(tmp_path / "cnn.pt", create_model("cnn_tiny", num_classes=2, clip_seconds=1.0))
    extra = [str(sed_ckpt) if a == "SED" else a for a in extra]
    code = main(_cli(clap, cfg, *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    if "SED" in extra or str(sed_ckpt) in extra:
        assert "holds no text tower" in err


def test_combined_is_the_combine_rule():
    """combined's prototypes are w * unit text + (1 - w) * unit support mean: weight 1 is text alone."""
    labels = np.repeat(np.arange(3), 4)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 4)).astype(np.float32)
    text = F.normalize(torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32)), dim=-1)
    one = {"ways": 3, "shots": 1, "queries": 3, "episodes": 20, "seed": 0}
    full = fewshot_eval(emb, labels, methods=["zero_shot", "combined"], text=text, text_weight=1.0, **one)
    assert full["methods"][0]["accuracies"] == full["methods"][1]["accuracies"]  # weight 1: text alone
