"""Ensembles of checkpoints: EnsembleClassifier (sedkit classify --ensemble) and ensemble_eval."""

import json

import numpy as np
import pytest
import torch
import yaml

from sed.checkpoint import save_model
from sed.cli.report import format_ensemble_eval
from sed.data.synth.corpora import make_esc50
from sed.inference.classifier import Classifier
from sed.inference.ensemble import EnsembleClassifier, combine
from sed.inference.ensemble_weights import ensemble_options
from sed.models import create_model
from sed.training.ensemble_eval import ensemble_eval

DATA = {
    "source": "esc50",
    "clip_seconds": 1.0,
    "batch_size": 4,
    "val_folds": [5],
    "test_folds": [5],
    "cache_audio": True,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-class 1-s corpus and two cnn_tiny members (different seeds, a few steps on the data)."""
    from sed.data.modules.audio import AudioDataModule

    root = tmp_path_factory.mktemp("ens")
    corpus = root / "esc"
    make_esc50(corpus, seed=0, num_classes=3, clips_per_class=5, duration=1.0, sample_rate=16000)
    dm = AudioDataModule(root=str(corpus), **DATA)
    dm.setup("fit")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model("cnn_tiny", num_classes=3, labels=dm.label_names, clip_seconds=1.0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for batch in list(dm.train_dataloader())[: 2 + 2 * seed]:
            loss = torch.nn.functional.cross_entropy(
                model(batch["wave"], lengths=batch["lengths"]), batch["label"]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        paths.append(str(save_model(root / f"m{seed}.pt", model.eval(), dm.label_names)))
    other = create_model("cnn_tiny", num_classes=3, labels=["x", "y", "z"], clip_seconds=1.0)
    odd = str(save_model(root / "other.pt", other.eval(), ["x", "y", "z"]))
    yield {
        "root": root,
        "corpus": corpus,
        "members": paths,
        "other": odd,
        "files": [it.path for it in dm.splits["val"]],
        "labels": dm.label_names,
    }
    torch.set_num_threads(n)


@pytest.mark.parametrize("method", ["vote", "average", "weighted", "rank"])
def test_ensemble_classifier_is_combine_of_member_scores(setup, method):
    clfs = [Classifier.from_pretrained(p, device="cpu") for p in setup["members"]]
    files = setup["files"]
    kw = (
        {"weights": [0.2, 0.8]}
        if method == "weighted"
        else {"metrics": [0.9, 0.4]}
        if method == "rank"
        else {}
    )
    rows = EnsembleClassifier(clfs, method, **kw).predict([*files, setup["root"] / "missing.wav"], top_k=3)
    member = [np.stack([r.scores for r in c.score(files)]) for c in clfs]
    expected = combine(member, method, **kw)
    assert len(rows) == len(files) + 1 and "error" in rows[-1] and "top_k" not in rows[-1]
    for row, exp, f in zip(rows, expected, files):
        assert row["file"] == f
        got = {d["label"]: d["score"] for d in row["top_k"]}
        assert got == pytest.approx({setup["labels"][i]: exp[i] for i in range(3)})
        assert row["top_k"][0]["label"] == setup["labels"][int(np.argmax(exp))]
    if method == "weighted":  # the weights matter: not the plain average
        assert not np.allclose(expected, combine(member, "average"))


def test_ensemble_classifier_windows_and_label_check(setup):
    clfs = [Classifier.from_pretrained(p, device="cpu") for p in setup["members"]]
    files = setup["files"][:2]
    rows = EnsembleClassifier(clfs, "average").predict(files, window=0.5, hop=0.5)
    wins = [c.score(files, window=0.5, hop=0.5)[0].windows for c in clfs]
    assert len(rows[0]["windows"]) == len(wins[0]) >= 2
    first = (wins[0][0][2] + wins[1][0][2]) / 2
    assert rows[0]["windows"][0]["top_k"][0]["score"] == pytest.approx(first.max())
    with pytest.raises(ValueError, match="labels"):
        EnsembleClassifier([clfs[0], Classifier.from_pretrained(setup["other"], device="cpu")], "average")
    with pytest.raises(ValueError, match="at least one"):
        EnsembleClassifier([], "average")


@pytest.mark.parametrize(
    "method, kw", [("average", {}), ("weighted", {"weights": [2.0]}), ("rank", {"metrics": [0.5]})]
)
def test_an_ensemble_of_one_is_its_classifier_exactly(setup, method, kw):
    clf = Classifier.from_pretrained(setup["members"][0], device="cpu")
    ens = EnsembleClassifier([clf], method, **kw)
    files = [*setup["files"][:3], setup["root"] / "missing.wav"]
    for options in ({}, {"window": 0.5, "hop": 0.25, "aggregate": "max"}):
        assert ens.predict(files, top_k=3, **options) == clf.predict(files, top_k=3, **options)
    wave = torch.randn(3, 16000)
    lengths = torch.tensor([16000, 12000, 8000])
    assert torch.equal(ens.classify_batch(wave, lengths).float(), clf.classify_batch(wave, lengths))


def test_classify_batch_is_the_score_of_each_waveform(setup):
    clfs = [Classifier.from_pretrained(p, device="cpu") for p in setup["members"]]
    waves = [torch.randn(16000), torch.randn(9000)]
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :9000] = waves[0], waves[1]
    lengths = torch.tensor([16000, 9000])
    for clf in clfs:
        got = clf.classify_batch(batch, lengths)
        assert got.shape == (2, 3) and got.dtype == torch.float32
        assert got.numpy() == pytest.approx(np.stack([r.scores for r in clf.score(waves)]), abs=1e-4)
        assert got.sum(1).numpy() == pytest.approx([1.0, 1.0], abs=1e-5)  # softmax rows
    ens = EnsembleClassifier(clfs, "weighted", weights=[0.2, 0.8])
    expected = combine(
        [c.classify_batch(batch, lengths).numpy() for c in clfs], "weighted", weights=[0.2, 0.8]
    )
    assert ens.classify_batch(batch, lengths).numpy() == pytest.approx(expected)
    assert ens.classify_batch(batch, lengths).numpy() == pytest.approx(
        np.stack([r.scores for r in ens.score(waves)]), abs=1e-4
    )


def test_ensemble_options(tmp_path):
    two = ["a.pt", "b.pt"]
    assert ensemble_options("vote", None, two) == {}
    assert ensemble_options("weighted", "1,3", two) == {
        "weights": [1.0, 3.0]
    }  # a list: in --checkpoint order
    assert ensemble_options("rank", [0.7, 0.9], two) == {"metrics": [0.7, 0.9]}
    f = tmp_path / "w.json"
    f.write_text(
        json.dumps(
            {
                "checkpoints": two,
                "weights": {"weighted": [0.4, 0.6], "rank": [1 / 3, 2 / 3]},
                "member_metrics": [0.5, 0.8],
            }
        )
    )
    assert ensemble_options("weighted", str(f), two) == {"weights": [0.4, 0.6]}
    assert ensemble_options("rank", str(f), two) == {"metrics": [0.5, 0.8]}
    for method, weights, msg in (
        ("weighted", None, "needs --weights"),
        ("rank", None, "needs --weights"),
        ("average", "1,2", "takes no"),
        ("weighted", "1,2,3", "3 weights"),
        ("weighted", "a,b", "comma"),
        ("median", None, "unknown"),
    ):
        with pytest.raises(ValueError, match=msg):
            ensemble_options(method, weights, two)


def test_a_weights_file_weighs_each_checkpoint_it_names_whatever_the_order(
    setup, tmp_path, monkeypatch, capsys
):
    from sed.cli.main import main

    a, b = setup["members"]
    f = tmp_path / "w.json"
    f.write_text(
        json.dumps(
            {
                "checkpoints": [a, b],
                "weights": {"weighted": [0.2, 0.8], "rank": [1 / 3, 2 / 3]},
                "member_metrics": [0.6, 0.9],
            }
        )
    )
    assert ensemble_options("weighted", str(f), [b, a]) == {"weights": [0.8, 0.2]}
    assert ensemble_options("rank", str(f), [b, a]) == {"metrics": [0.9, 0.6]}
    monkeypatch.chdir(setup["root"])  # the same files by another name
    assert ensemble_options("weighted", str(f), ["m1.pt", "./m0.pt"]) == {"weights": [0.8, 0.2]}
    # end to end: the members in the other order get the same weights, so the same scores
    files = setup["files"][:3]
    code = main(
        [
            "classify",
            *files,
            "--checkpoint",
            b,
            "--checkpoint",
            a,
            "--ensemble",
            "weighted",
            "--weights",
            str(f),
            "--format",
            "json",
            "--top-k",
            "3",
        ]
    )
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    member = [
        np.stack([r.scores for r in Classifier.from_pretrained(p, device="cpu").score(files)]) for p in (a, b)
    ]
    expected = combine(member, "weighted", weights=[0.2, 0.8])
    assert code == 0 and not np.allclose(expected, combine(member, "weighted", weights=[0.8, 0.2]))
    for row, exp in zip(rows, expected):
        assert {d["label"]: d["score"] for d in row["top_k"]} == pytest.approx(
            dict(zip(setup["labels"], exp))
        )


@pytest.mark.parametrize(
    "given, recorded, msg",
    [
        (["a", "b"], ["a", "other"], "{f}: no weight for --checkpoint {b} (it weighs {a}, {other})"),
        (["a", "b"], ["a", "b", "other"], "{f}: weighs {other}, which is not a --checkpoint of this run"),
        (["a", "a"], ["a", "b"], "{f}: no weight for --checkpoint {a} (it weighs {a}, {b})"),
    ],
)
def test_a_weight_of_an_unknown_or_missing_checkpoint_is_one_usage_line(
    setup, tmp_path, capsys, given, recorded, msg
):
    from sed.cli.main import main

    names = {"a": setup["members"][0], "b": setup["members"][1], "other": setup["other"]}
    f = tmp_path / "w.json"
    n = len(recorded)
    f.write_text(
        json.dumps(
            {
                "checkpoints": [names[k] for k in recorded],
                "member_metrics": [0.5] * n,
                "weights": {"weighted": [1 / n] * n, "rank": [1 / n] * n},
            }
        )
    )
    argv = [x for k in given for x in ("--checkpoint", names[k])]
    assert main(["classify", setup["files"][0], *argv, "--ensemble", "weighted", "--weights", str(f)]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: " + msg.format(f=f, **names)]


@pytest.mark.parametrize(
    "content, msg",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a weights file of sedkit ensemble-eval"),
        (
            json.dumps({"weights": {"weighted": [0.4, 0.6]}, "member_metrics": [0.5, 0.8]}),
            "names no checkpoints",
        ),
        (
            json.dumps(
                {"checkpoints": ["a.pt", "b.pt"], "weights": {"weighted": [0.4]}, "member_metrics": [1, 2]}
            ),
            "1 weighted weights for 2 checkpoints",
        ),
        (
            json.dumps(
                {"checkpoints": ["a.pt", "b.pt"], "weights": {"weighted": ["x", 1]}, "member_metrics": [1, 2]}
            ),
            "weighted weights are not numbers",
        ),
        (None, "larger than 1 MiB"),
    ],
    ids=["not-json", "a-list", "old-file", "short", "strings", "huge"],
)
def test_a_bad_weights_file_is_one_line_naming_it(tmp_path, content, msg):
    f = tmp_path / "w.json"
    f.write_text(" " * (2 << 20) if content is None else content)
    with pytest.raises(ValueError, match=f"^{f}: .*{msg}") as err:
        ensemble_options("weighted", str(f), ["a.pt", "b.pt"])
    assert "\n" not in str(err.value)


def test_ensemble_eval_members_methods_and_weights(setup, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "trainer": {"max_epochs": 1},
                "data": {
                    "class_path": "sed.data.modules.audio.AudioDataModule",
                    "init_args": {**DATA, "root": str(setup["corpus"])},
                },
            }
        )
    )
    out = tmp_path / "weights.json"
    table = ensemble_eval(setup["members"], str(cfg), split="val", out=out)
    assert table["metric"] == "acc" and table["clips"] == len(setup["files"])
    assert [m["checkpoint"] for m in table["members"]] == setup["members"]
    assert [r["method"] for r in table["methods"]] == ["vote", "average", "weighted", "rank"]
    # each member's accuracy is its argmax accuracy on the val clips
    truth = [json.loads(json.dumps(lbl)) for lbl in _val_labels(setup)]
    for path, row in zip(setup["members"], table["members"]):
        clf = Classifier.from_pretrained(path, device="cpu")
        pred = [int(r.scores.argmax()) for r in clf.score(setup["files"])]
        assert row["acc"] == pytest.approx(np.mean([p == t for p, t in zip(pred, truth)]))
        assert 0.0 <= row["f1"] <= 1.0
    accs = table["member_metrics"]
    saved = json.loads(out.read_text())
    assert saved["member_metrics"] == pytest.approx(accs)
    if sum(accs) > 0:
        assert saved["weights"]["weighted"] == pytest.approx([a / sum(accs) for a in accs])
    assert sum(saved["weights"]["rank"]) == pytest.approx(1.0)
    text = format_ensemble_eval(table)
    assert "rank" in text and "member 1" in text
    # the weights file feeds sedkit classify --ensemble weighted --weights FILE
    assert ensemble_options("weighted", str(out), setup["members"])["weights"] == saved["weights"]["weighted"]

    # a bare init_args mapping works too; members with other labels are refused
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({**DATA, "root": str(setup["corpus"])}))
    assert ensemble_eval(setup["members"], str(bare))["member_metrics"] == pytest.approx(accs)
    with pytest.raises(ValueError, match="labels"):
        ensemble_eval([setup["members"][0], setup["other"]], str(bare))


def _val_labels(setup):
    from sed.data.modules.audio import AudioDataModule

    dm = AudioDataModule(root=str(setup["corpus"]), **DATA)
    return [it.label for it in dm.splits["val"]]


@pytest.mark.parametrize("method", ["vote", "average", "weighted", "rank"])
def test_sedkit_classify_with_two_checkpoints(setup, method, capsys):
    from sed.cli.main import main

    a, b = setup["members"]
    extra = ["--weights", "0.3,0.7"] if method in ("weighted", "rank") else []
    code = main(
        [
            "classify",
            *map(str, setup["files"]),
            "--checkpoint",
            a,
            "--checkpoint",
            b,
            "--ensemble",
            method,
            *extra,
            "--format",
            "json",
            "--top-k",
            "3",
        ]
    )
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(rows) == len(setup["files"])
    member = [
        np.stack([r.scores for r in Classifier.from_pretrained(p, device="cpu").score(setup["files"])])
        for p in (a, b)
    ]
    kw = (
        {"weights": [0.3, 0.7]}
        if method == "weighted"
        else {"metrics": [0.3, 0.7]}
        if method == "rank"
        else {}
    )
    expected = combine(member, method, **kw)
    for row, exp in zip(rows, expected):
        assert row["top_k"][0]["label"] == setup["labels"][int(np.argmax(exp))]


def test_sedkit_ensemble_usage_and_eval(setup, tmp_path, capsys):
    from sed.cli.main import main

    a, b = setup["members"]
    assert main(["classify", *map(str, setup["files"]), "--checkpoint", a, "--checkpoint", b]) == 2
    assert "need --ensemble" in capsys.readouterr().err
    assert main(["classify", *map(str, setup["files"]), "--checkpoint", a, "--ensemble", "average"]) == 2
    assert "error: an ensemble needs at least two checkpoints" in capsys.readouterr().err
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "sed.data.modules.audio.AudioDataModule",
                    "init_args": {"root": str(setup["corpus"]), **DATA},
                }
            }
        )
    )
    assert (
        main(
            ["ensemble-eval", "--checkpoints", a, b, "--config", str(cfg), "--out", str(tmp_path / "w.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rank" in out and "vote" in out and (tmp_path / "w.json").exists()


def test_ensemble_eval_takes_data_overrides_as_fit_does(setup, tmp_path, capsys):
    """--data.init_args.KEY=VALUE reaches the data module as in sedkit fit (issue 22), with a fit config or
    bare init args: the test split of folds 1 and 2 is 6 clips, not fold 5's 3."""
    from sed.cli.main import main

    fit = tmp_path / "fit.yaml"
    fit.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "sed.data.modules.audio.AudioDataModule",
                    "init_args": {"root": str(setup["corpus"]), **DATA},
                }
            }
        )
    )
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({**DATA, "root": str(setup["corpus"])}))
    for cfg in (fit, bare):
        out = tmp_path / f"{cfg.stem}.json"
        argv = ["ensemble-eval", "--checkpoints", *setup["members"], "--config", str(cfg), "--split", "test"]
        assert main([*argv, "--out", str(out)]) == 0
        assert json.loads(out.read_text())["clips"] == 3
        assert main([*argv, "--out", str(out), "--data.init_args.test_folds=[1,2]"]) == 0
        assert json.loads(out.read_text())["clips"] == 6
    capsys.readouterr()
    assert main([*argv, "--data.init_args.test_folds=oops"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test_folds" in err, err
