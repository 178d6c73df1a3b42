"""The declared families and weights: one table per family, ``sedkit models``, and docs/models.md made from
them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sed.cli.catalogue import markdown
from sed.models import list_models
from sed.models.catalogue import MARKERS, catalogue, parameter_count
from sed.models.family import default_weights, families, family_of_model, find_weights, weights_table

ROOT = Path(__file__).resolve().parents[2]
#: how a short name looks in prose and configs
SHORT_NAME = re.compile(
    r"(?<![#/\w-])((?:ast|beats|ced|efficientat)-[a-z0-9.+-]*[a-z0-9]|deit_[a-z]+_distilled_patch16_\d+)\b"
)


def _sedkit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "HTTPS_PROXY": "http://127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, "-m", "sed", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_every_registered_model_belongs_to_one_family():
    owners = {name: [f.name for f in families() if name in f.sizes] for name in list_models()}
    assert {n: o for n, o in owners.items() if len(o) != 1} == {}
    for fam in families():
        assert family_of_model(fam.test_size) is fam


def test_every_declared_weight_is_well_formed():
    names = [w.name for w in weights_table()]
    assert len(names) == len(set(names)) and len(names) >= 27
    for w in weights_table():
        assert family_of_model(w.arch) is find_weights(w.name)[0]
        assert w.sources and all(
            re.match(r"^(hf://[\w.-]+/[\w.-]+(/\S+)?|https://\S+|timm://\w+)$", s) for s in w.sources
        )
        assert w.homepage.startswith("https://") and w.licence and w.metric and w.citation
        assert w.sample_rate in (16000, 32000, 48000) and 0 < w.clip_seconds <= 10.24
        assert (w.classes is None) == (w.label_set is None) and (w.multi_label == (w.label_set == "audioset"))
    assert default_weights("ast_base").name == "ast-audioset-0.4593"
    assert (
        default_weights("efficientat_mn10").name == "efficientat-mn10-as"
        and default_weights("ast_micro") is None
    )


def test_parameter_counts_are_the_references():
    # the published sizes (counted in the reference code): EfficientAT mn10, CED-Mini, BEATs iter3 with
    # its 527 head
    assert parameter_count("efficientat_mn10") == 4_876_831
    assert parameter_count("ced_mini") == 9_696_655
    assert round(parameter_count("beats_iter3") / 1e6, 1) == 90.7


def test_docs_model_tables_are_generated_from_the_declarations():
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    begin, end = (text.index(m) for m in MARKERS)
    assert text[begin + len(MARKERS[0]) : end].strip() == markdown(catalogue()).strip(), (
        "docs/models.md's model tables are stale: regenerate them with `sedkit models --format markdown`"
    )


def test_every_short_name_the_docs_mention_is_declared():
    files = [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("recipes/*/README.md"),
        *ROOT.glob("recipes/*/*.yaml"),
    ]
    mentioned = {m for f in files for m in SHORT_NAME.findall(f.read_text(encoding="utf-8"))}
    mentioned -= {"ast-patchmix-icbhi.md"}  # the spec's file name, not a checkpoint
    assert len(mentioned) >= 10
    assert sorted(n for n in mentioned if find_weights(n) is None) == []


def test_sedkit_models_works_offline():
    out = _sedkit("models", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["family"] for r in rows} >= {"ast", "beats", "ced", "efficientat", "cnn", "tcn"}
    listed = {w["name"] for r in rows for w in r["weights"]}
    assert listed == {w.name for w in weights_table()}
    ced = next(r for r in rows if r["family"] == "ced")
    assert ced["length_policy"] == "native" and {s["name"] for s in ced["sizes"]} == {
        "ced_tiny",
        "ced_mini",
        "ced_small",
        "ced_base",
    }
    table = _sedkit("models", "--family", "beats")
    assert (
        table.returncode == 0 and "beats-iter3-plus-as2m" in table.stdout and "ced-mini" not in table.stdout
    )


def test_sedkit_models_unknown_family_is_one_line():
    out = _sedkit("models", "--family", "nope")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown family 'nope'" in out.stderr


@pytest.mark.parametrize(
    "policy, sizes",
    [("native", ("beats_micro", "ced_tiny", "efficientat_mn04")), ("fixed", ("ast_micro", "cnn_tiny"))],
)
def test_length_policy_is_the_models(policy, sizes):
    from sed.models import create_model

    for size in sizes:
        assert family_of_model(size).length_policy == policy
        model = create_model(size, num_classes=2)
        if policy == "fixed":
            assert model.max_samples == model.clip_samples
        else:
            assert getattr(model, "native_length", False) and model.max_samples != model.clip_samples
