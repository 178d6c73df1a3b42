"""fewshot-eval refuses impossible episodes before embedding and shows progress (issue 23)."""

import pytest
import torch

import sed.training.fewshot_eval
from sed.checkpoint import save_model
from sed.cli.main import Console, main
from sed.data.synth.corpora import make_esc50
from sed.models import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """3 synthetic classes x 5 clips of 1 s, their data YAML and a random-weight cnn_tiny backbone."""
    root = tmp_path_factory.mktemp("fse")
    make_esc50(root / "esc", seed=0, num_classes=3, clips_per_class=5, duration=1.0, sample_rate=16000)
    cfg = root / "data.yaml"
    cfg.write_text(
        f"data:\n  class_path: sed.data.modules.audio.AudioDataModule\n  init_args:\n"
        f"    source: esc50\n    root: {root / 'esc'}\n    clip_seconds: 1.0\n"
    )
    torch.manual_seed(0)
    backbone = save_model(
        root / "b.pt", create_model("cnn_tiny", num_classes=3, clip_seconds=1.0).eval(), ["a", "b", "c"]
    )
    return cfg, backbone


@pytest.fixture
def bars(monkeypatch):
    """(desc, total, items seen) of every progress bar the CLI opens."""
    seen = []

    def progress(self, iterable, total=None, desc="", unit="file"):
        row = [desc, total, 0, unit]
        seen.append(row)
        for x in iterable:
            row[2] += 1
            yield x

    monkeypatch.setattr(Console, "progress", progress)
    return seen


def test_impossible_episodes_are_refused_before_anything_is_embedded(setup, monkeypatch, capsys):
    cfg, backbone = setup

    def never(*a, **k):
        raise AssertionError("embedded although the episodes could never be drawn")

    monkeypatch.setattr(sed.training.fewshot_eval, "embed_items", never)
    code = main(
        [
            "fewshot-eval",
            "--checkpoint",
            str(backbone),
            "--data",
            str(cfg),
            "--split",
            "all",
            "--ways",
            "5",
            "--shots",
            "2",
            "--queries",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "5-way 2-shot episodes with 2 queries need 5 classes of at least 4 clips" in err
    assert "the all split has 3 such class(es)" in err
    code = main(
        [
            "fewshot-eval",
            "--checkpoint",
            str(backbone),
            "--data",
            str(cfg),
            "--split",
            "all",
            "--ways",
            "2",
            "--shots",
            "3",
            "--queries",
            "3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "need 2 classes of at least 6 clips" in err and "has 0 such class(es)" in err
    assert "clips per class: tone 5, chirp 5, noise_burst 5" in err


def test_progress_over_embedding_and_episodes(setup, bars, capsys):
    cfg, backbone = setup
    code = main(
        [
            "fewshot-eval",
            "--checkpoint",
            str(backbone),
            "--data",
            str(cfg),
            "--split",
            "all",
            "--ways",
            "2",
            "--shots",
            "1",
            "--queries",
            "2",
            "--episodes",
            "4",
            "--methods",
            "prototype_cosine",
            "logistic",
            "--batch-size",
            "5",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert bars == [
        ["embed", 15, 15, "file"],
        ["prototype_cosine", 4, 4, "episode"],
        ["logistic", 4, 4, "episode"],
    ]


def test_data_overrides_as_in_fit(setup, bars, capsys):
    """--data.init_args.KEY=VALUE reaches the data module as in sedkit fit (issue 22): the test split of folds
    1 and 2 is 6 clips; a key the data module does not take is one line naming it."""
    cfg, backbone = setup
    argv = [
        "fewshot-eval",
        "--checkpoint",
        str(backbone),
        "--data",
        str(cfg),
        "--split",
        "test",
        "--ways",
        "2",
        "--shots",
        "1",
        "--queries",
        "1",
        "--episodes",
        "2",
        "--methods",
        "prototype_cosine",
    ]
    assert main([*argv, "--data.init_args.test_folds=[1,2]"]) == 0, capsys.readouterr().err
    assert bars[0][:3] == ["embed", 6, 6]
    code = main([*argv, "--data.init_args.nope=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "nope" in err, err
    with pytest.raises(SystemExit, match="2"):  # a verb that reads no data config takes none
        main(["embed", "x.wav", "--checkpoint", str(backbone), "--out", "e.npy", "--data.init_args.nope=1"])
    assert "unrecognized arguments: --data.init_args.nope=1" in capsys.readouterr().err
