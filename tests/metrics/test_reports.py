import csv
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from sed.errors import DatasetError
from sed.metrics import (
    Diagnosis,
    diagnose,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_run,
    read_confusion_csv,
    read_history,
    write_confusion_csv,
)
from sed.metrics import per_class_table as table

CHANCE10 = math.log(10)


def overfit(n=20):
    """Validation minimum at epoch 5 (0.6), then +0.06/epoch; training loss keeps falling."""
    e = np.arange(n)
    return 2.0 * np.exp(-e / 4) + 0.05, np.where(e < 5, 0.6 + 0.15 * (5 - e), 0.6 + 0.06 * (e - 5))


def underfit(n=30):
    """Training loss stays near chance (ln 10 = 2.30): 2.30 -> 2.20 within 3 epochs, then flat."""
    t = 2.3 - 0.1 * (1 - np.exp(-np.arange(n) / 3))
    return t, t + 0.02


def good_fit(n=30):
    """Both decrease, then flatten at 0.30 / 0.38."""
    decay = 2.3 * np.exp(-np.arange(n) / 4)
    return decay + 0.3, decay + 0.38


def noisy(curves, seed, std=0.02):
    rng = np.random.default_rng(seed)
    return [c + rng.normal(0, std, len(c)) for c in curves]


# ------------------------------------------------------------------------------------ diagnose
def test_clear_overfit_is_found_at_the_validation_minimum():
    d = diagnose(*overfit())
    assert isinstance(d, Diagnosis)
    assert d.kind == "overfitting"
    assert d.epoch == 5
    assert d.details["rule"] == "rise" and d.details["epochs_since_best"] == 14
    assert "epoch 5" in d.message and "Stop early" in d.message
    assert "regularisation" in d.message and "augmentation" in d.message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_overfit(seed):
    d = diagnose(*noisy(overfit(), seed))
    assert d.kind == "overfitting"
    assert abs(d.epoch - 5) <= 1


def test_overfit_epoch_follows_the_given_epoch_numbers():
    d = diagnose(*overfit(), epochs=list(range(10, 30)))
    assert d.kind == "overfitting" and d.epoch == 15


def test_rise_shorter_than_patience_is_not_overfitting():
    t, v = overfit(n=8)  # minimum at 5, only two epochs after it
    d = diagnose(t, v, patience=3)
    assert d.kind != "overfitting"
    assert diagnose(t, v, patience=2).kind == "overfitting"


def test_validation_plateau_far_above_training_is_overfitting():
    e = np.arange(31)
    t = 3.9 * np.exp(-e / 3) + 0.02
    v = np.where(e < 10, 1.0 + 2.9 * (np.exp(-e / 3) - np.exp(-10 / 3)), 1.0)
    d = diagnose(t, noisy([v], 0, std=0.01)[0], chance_loss=math.log(50))
    assert d.kind == "overfitting" and d.details["rule"] == "gap"
    assert 8 <= d.epoch <= 11


@pytest.mark.parametrize("chance", [CHANCE10, None])
def test_underfit(chance):
    d = diagnose(*underfit(), chance_loss=chance)
    assert d.kind == "underfitting"
    assert d.epoch is None
    assert "bigger model" in d.message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_underfit(seed):
    assert diagnose(*noisy(underfit(), seed), chance_loss=CHANCE10).kind == "underfitting"


@pytest.mark.parametrize("chance", [CHANCE10, None])
def test_good_fit(chance):
    d = diagnose(*good_fit(), chance_loss=chance)
    assert d.kind == "good fit"
    assert 0 < d.details["gap"] < 0.1 * d.details["scale"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_good_fit(seed):
    assert diagnose(*noisy(good_fit(), seed), chance_loss=CHANCE10).kind == "good fit"


def test_good_fit_curves_are_not_good_fit_if_val_stays_far_above():
    t, v = good_fit()
    assert diagnose(t, v + 0.6, chance_loss=CHANCE10).kind == "overfitting"


def test_too_few_epochs():
    d = diagnose([2.3, 1.5, 1.2], [2.3, 1.6, 1.3])
    assert d.kind == "not enough epochs" and "3 epoch" in d.message


def test_still_falling_means_not_enough_epochs():
    decay = 2.3 * np.exp(-np.arange(30) / 20)
    d = diagnose(decay + 0.3, decay + 0.38, chance_loss=CHANCE10)
    assert d.kind == "not enough epochs" and "still falling" in d.message


def test_training_loss_that_rose_at_the_end_is_not_still_falling():
    """The demo's 8 epochs: training loss falls to epoch 5, then rises for two epochs (the mean of the last
    epochs is still below the mean of the ones before, which the old rule read as "still falling")."""
    t = np.array([2.2, 1.8, 1.4, 1.1, 0.9, 0.8, 0.95, 1.1])
    d = diagnose(t, t + 0.1, chance_loss=CHANCE10)
    assert d.kind == "unstable" and "still falling" not in d.message
    assert "training loss rose over the last 3 epochs (0.8 -> 1.1, 13.0% of 2.3)" in d.message
    assert "Lower the learning rate" in d.message
    assert d.details["train_trend"] == pytest.approx(0.3 / CHANCE10)


@pytest.mark.parametrize(
    "end, kind, words",
    [
        ([0.60, 0.50, 0.40], "not enough epochs", "training loss is still falling"),  # falling
        ([0.40, 0.55, 0.70], "unstable", "training loss rose"),  # rising
        ([0.40, 0.40, 0.40], "good fit", "converged"),  # flat
        ([0.40, 0.40, 0.40, 0.60, 0.40, 0.40], "good fit", "converged"),  # one spike inside a flat end
    ],
)
def test_the_diagnosis_reads_the_trend_of_the_last_epochs(end, kind, words):
    t = np.concatenate([np.linspace(2.3, 0.6, 10), end])
    d = diagnose(t, t + 0.05, chance_loss=CHANCE10)
    assert d.kind == kind and words in d.message, d.message


def test_validation_still_falling_with_a_flat_training_loss_names_validation():
    e = np.arange(20)
    t = 1.3 * np.exp(-e) + 0.3  # flat from epoch 5
    v = 0.9 - 0.02 * e  # still falling by 0.06 (2.6% of ln 10) over the last 3 epochs
    d = diagnose(t, v, chance_loss=CHANCE10)
    assert d.kind == "not enough epochs" and "validation loss is still falling" in d.message, d.message


def test_diagnosis_is_json_serialisable():
    for curves in (overfit(), underfit(), good_fit()):
        d = diagnose(*curves)
        assert json.loads(json.dumps(d.to_dict()))["kind"] == d.kind


# ---------------------------------------------------------------------------------- read_history
SPARSE = """epoch,step,lr-AdamW,train_loss_step,train_loss_epoch,train_acc,val_loss,val_acc,val_recall/dog
0,9,0.001,,,,,,
0,9,,2.5,,,,,
0,19,,2.1,,,,,
0,19,,,,,1.8,0.4,0.5
0,19,,,2.2,0.3,,,
1,29,0.0005,,,,,,
1,39,,,,,1.5,nan,0.75
1,39,,,1.6,0.55,,,
2,59,,,,,1.4,0.6,
"""


def write(path, text, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_read_history_merges_sparse_lightning_rows(tmp_path):
    write(tmp_path / "metrics.csv", SPARSE)
    h = read_history(tmp_path)
    assert h["train_loss"] == [(0, 2.2), (1, 1.6)]  # *_epoch read as the key, *_step dropped
    assert "train_loss_step" not in h and "train_loss_epoch" not in h
    assert h["val_loss"] == [(0, 1.8), (1, 1.5), (2, 1.4)]
    assert h["val_acc"] == [(0, 0.4), (2, 0.6)]  # nan ignored
    assert h["val_recall/dog"] == [(0, 0.5), (1, 0.75)]  # empty ignored
    assert h["lr-AdamW"] == [(0, 0.001), (1, 0.0005)]
    assert h["train_acc"] == [(0, 0.3), (1, 0.55)]


def test_read_history_picks_the_newest_version_folder(tmp_path):
    write(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", "epoch,step,val_loss\n0,1,9.0\n", 1000)
    write(tmp_path / "lightning_logs" / "version_1" / "metrics.csv", SPARSE, 2000)
    assert read_history(tmp_path)["val_loss"][0] == (0, 1.8)
    write(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", "epoch,step,val_loss\n0,1,9.0\n", 3000)
    assert read_history(tmp_path)["val_loss"] == [(0, 9.0)]


def test_step_level_metric_becomes_epoch_mean(tmp_path):
    write(tmp_path / "version_0" / "metrics.csv", "epoch,step,train_loss\n0,1,2.0\n0,2,1.0\n1,3,0.5\n")
    assert read_history(tmp_path)["train_loss"] == [(0, 1.5), (1, 0.5)]


def test_read_history_without_metrics_names_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        read_history(tmp_path)


# ------------------------------------------------------------------------------------ confusion
def test_confusion_csv_round_trip(tmp_path):
    labels = ["dog", "rain, heavy", "cat"]
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 7]])
    path = write_confusion_csv(tmp_path / "confusion_val.csv", m, labels)
    assert path.read_text().splitlines()[0] == 'true\\pred,dog,"rain, heavy",cat'
    m2, labels2 = read_confusion_csv(path)
    assert labels2 == labels
    np.testing.assert_array_equal(m2, m)
    assert m2.dtype.kind == "i"
    assert [p.name for p in tmp_path.iterdir()] == ["confusion_val.csv"]  # no temporary left


def test_bad_confusion_csv_is_a_dataset_error(tmp_path):
    bad = write(tmp_path / "c.csv", "true\\pred,a,b\na,1,2\n")
    with pytest.raises(DatasetError, match="c.csv"):
        read_confusion_csv(bad)
    with pytest.raises(DatasetError, match="non-numeric"):
        read_confusion_csv(write(tmp_path / "d.csv", "true\\pred,a\na,x\n"))
    with pytest.raises(ValueError):
        write_confusion_csv(tmp_path / "e.csv", np.zeros((2, 2)), ["a", "b", "c"])


def test_per_class_table_matches_hand_computation():
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])  # rows true, columns predicted
    rows = {r["label"]: r for r in table(m, ["a", "b", "c"])}
    pa, ra = 5 / 7, 5 / 6
    assert rows["a"]["precision"] == pytest.approx(pa)
    assert rows["a"]["recall"] == pytest.approx(ra)
    assert rows["a"]["f1"] == pytest.approx(2 * pa * ra / (pa + ra))
    assert rows["a"]["support"] == 6
    pb, rb = 3 / 4, 3 / 6
    assert (rows["b"]["precision"], rows["b"]["recall"]) == (pytest.approx(pb), pytest.approx(rb))
    assert rows["b"]["f1"] == pytest.approx(2 * pb * rb / (pb + rb))
    assert rows["c"] == {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


# -------------------------------------------------------------------------------------- figures
def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 300
    assert len(data) > min_bytes


def lightning_csv(path, train, val, acc=None):
    rows = []
    for e, (t, v) in enumerate(zip(train, val)):
        rows.append({"epoch": e, "step": 10 * e + 9, "lr-AdamW": 1e-3})
        rows.append(
            {
                "epoch": e,
                "step": 10 * e + 9,
                "val_loss": v,
                "val_acc": acc[e] if acc else "",
                "val_f1": acc[e] - 0.05 if acc else "",
            }
        )
        rows.append(
            {"epoch": e, "step": 10 * e + 9, "train_loss": t, "train_acc": acc[e] + 0.1 if acc else ""}
        )
    rows.append({"epoch": len(train), "step": 10 * len(train), "test_loss": val[-1], "test_acc": 0.7})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(
            f,
            [
                "epoch",
                "step",
                "lr-AdamW",
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "val_f1",
                "test_loss",
                "test_acc",
            ],
        )
        w.writeheader()
        w.writerows(rows)


def test_plot_run_writes_everything(tmp_path):
    labels = ["dog", "rain", "cat"]
    train, val = overfit()
    lightning_csv(tmp_path / "version_0" / "metrics.csv", train, val, acc=list(np.linspace(0.3, 0.8, 20)))
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    write_confusion_csv(tmp_path / "confusion_val.csv", [[5, 1, 0], [2, 3, 1], [0, 1, 7]], labels)
    write_confusion_csv(tmp_path / "confusion_test.csv", [[4, 2, 0], [1, 4, 1], [0, 0, 8]], labels)
    out = plot_run(tmp_path)
    assert out["diagnosis"].kind == "overfitting" and out["diagnosis"].epoch == 5
    assert set(out["files"]) == {
        "diagnosis",
        "learning_curves",
        "confusion_val",
        "per_class_val",
        "confusion_test",
        "per_class_test",
    }
    assert_png(tmp_path / "learning_curves.png", 20000)
    assert_png(tmp_path / "confusion_val.png")
    assert_png(tmp_path / "confusion_test.png")
    saved = json.loads((tmp_path / "diagnosis.json").read_text())
    assert saved["kind"] == "overfitting" and saved["epoch"] == 5
    with open(tmp_path / "per_class_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == labels
    assert float(rows[2]["recall"]) == pytest.approx(1.0) and int(rows[0]["support"]) == 6
    assert out["notes"] == []


def test_plot_run_skips_missing_pieces(tmp_path):
    lightning_csv(tmp_path / "metrics.csv", *good_fit())
    (tmp_path / "confusion_test.csv").write_text("true\\pred,a,b\na,1\n")  # malformed
    (tmp_path / "labels.json").write_text(json.dumps([f"c{i}" for i in range(10)]))
    out = plot_run(tmp_path)
    assert out["diagnosis"].kind == "good fit"
    assert out["diagnosis"].details["scale"] == pytest.approx(CHANCE10)  # chance level from labels.json
    assert set(out["files"]) == {"diagnosis", "learning_curves"}
    assert any("no confusion_val.csv" in n for n in out["notes"])
    assert any("confusion_test.csv" in n and "skipped" in n for n in out["notes"])
    assert_png(tmp_path / "learning_curves.png")


def test_plot_run_without_metrics_names_the_folder(tmp_path):
    (tmp_path / "confusion_val.csv").write_text("true\\pred,a\na,1\n")
    with pytest.raises(DatasetError, match=str(tmp_path)):
        plot_run(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        plot_run(tmp_path / "missing")


def test_plot_functions_directly(tmp_path):
    history = {"train_loss": [(0, 1.0), (1, 0.5)], "val_loss": [(0, 1.1), (1, 0.7)]}
    assert_png(plot_learning_curves(history, tmp_path / "lc.png"))
    path = write_confusion_csv(
        tmp_path / "c.csv", np.eye(25, dtype=int) * 3 + 1, [f"c{i}" for i in range(25)]
    )
    assert_png(plot_confusion_matrix(path, None, tmp_path / "cm.png"))
    assert_png(
        plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "raw.png", normalize=False)
    )


# ------------------------------------------------------------------- one unit per learning-curve axis
def drawn_figure(monkeypatch, draw):
    """The matplotlib Figure that ``draw()`` saves (save_figure captured; nothing is written)."""
    import sed.metrics.confusion
    import sed.metrics.curves

    figures = []

    def capture(fig, out):
        figures.append(fig)
        return out

    monkeypatch.setattr(sed.metrics.curves, "save_figure", capture)
    monkeypatch.setattr(sed.metrics.confusion, "save_figure", capture, raising=False)
    draw()
    assert len(figures) == 1
    return figures[0]


def panels(fig):
    """{y label: sorted legend entries} of the visible axes (colour bars have no legend)."""
    out = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.get_ylabel():
            legend = ax.get_legend()
            out[ax.get_ylabel()] = sorted(t.get_text() for t in legend.get_texts()) if legend else []
    return out


def epochs(values):
    return [(e, float(v)) for e, v in enumerate(values)]


def test_seld_curves_put_each_unit_on_its_own_axis(monkeypatch, tmp_path):
    history = {
        "train_loss": epochs([0.9, 0.6, 0.5]),
        "val_loss": epochs([1.0, 0.8, 0.7]),
        "val_F": epochs([0.05, 0.2, 0.3]),
        "val_LR": epochs([0.1, 0.3, 0.4]),
        "val_ER": epochs([1.2, 0.9, 0.8]),
        "val_SELD": epochs([0.8, 0.6, 0.55]),
        "val_LE": epochs([90.0, 40.0, 30.0]),
        "lr-Adam": epochs([1e-3, 1e-4, 1e-5]),
        "val_F/Bell": epochs([0.1, 0.2, 0.3]),
    }
    fig = drawn_figure(monkeypatch, lambda: plot_learning_curves(history, tmp_path / "lc.png"))
    assert panels(fig) == {
        "loss": ["train_loss", "val_loss"],
        "fraction (0-1)": ["val_ER", "val_F", "val_LR", "val_SELD"],
        "degrees (°)": ["val_LE"],
        "learning rate (log)": ["lr-Adam"],
    }
    lr_axis = next(ax for ax in fig.axes if ax.get_ylabel() == "learning rate (log)")
    assert lr_axis.get_yscale() == "log"


def test_icbhi_curves_keep_percentages_apart_from_fractions(monkeypatch, tmp_path):
    history = {
        "train_loss": epochs([1.2, 1.0]),
        "val_loss": epochs([1.3, 1.1]),
        "val_sp": epochs([60.0, 70.0]),
        "val_se": epochs([20.0, 30.0]),
        "val_score": epochs([40.0, 50.0]),
        "val_acc": epochs([0.5, 0.6]),
        "train_acc": epochs([0.55, 0.7]),
        "test_score": [(1, 48.0)],
    }
    fig = drawn_figure(monkeypatch, lambda: plot_learning_curves(history, tmp_path / "lc.png"))
    assert panels(fig) == {
        "loss": ["train_loss", "val_loss"],
        "fraction (0-1)": ["train_acc", "val_acc"],
        "percent (%)": ["test_score", "val_score", "val_se", "val_sp"],
    }


# ------------------------------------------------------------ confusion matrices say what they show
def cell_texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def test_confusion_matrix_names_split_and_checkpoint_and_shows_counts(monkeypatch, tmp_path):
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 1, 7]])
    fig = drawn_figure(
        monkeypatch,
        lambda: plot_confusion_matrix(
            m,
            ["dog", "rain", "cat"],
            tmp_path / "c.png",
            split="test",
            checkpoint="runs/x/best-epoch=3.ckpt",
            epoch=3,
        ),
    )
    ax = fig.axes[0]
    assert (
        "test split" in ax.get_title()
        and "best-epoch=3.ckpt" in ax.get_title()
        and "epoch 3" in ax.get_title()
    )
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dog", "rain", "cat"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dog", "rain", "cat"]
    assert cell_texts(fig)[:3] == ["0.83\n(5)", "0.17\n(1)", "0.00\n(0)"]  # row share and count
    fig = drawn_figure(
        monkeypatch,
        lambda: plot_confusion_matrix(
            m, ["a", "b", "c"], tmp_path / "r.png", normalize=False, split="val", epoch=7
        ),
    )
    assert "val split" in fig.axes[0].get_title() and "epoch 7" in fig.axes[0].get_title()
    assert cell_texts(fig)[:3] == ["5", "1", "0"]


def test_plot_run_titles_confusion_with_the_recorded_checkpoint_and_label_names(monkeypatch, tmp_path):
    lightning_csv(tmp_path / "metrics.csv", *good_fit())
    (tmp_path / "labels.json").write_text(json.dumps(["dog", "rain"]))
    write_confusion_csv(
        tmp_path / "confusion_test.csv",
        [[4, 1], [2, 3]],
        ["dog", "rain"],
        meta={"split": "test", "epoch": 4, "checkpoint": str(tmp_path / "best-epoch=4.ckpt")},
    )
    write_confusion_csv(tmp_path / "confusion_val.csv", [[4, 1], [2, 3]], ["0", "1"])  # written without names
    figures = {}
    import sed.metrics.confusion

    def capture(fig, out):
        figures[Path(out).name] = fig
        return Path(out)

    monkeypatch.setattr(sed.metrics.confusion, "save_figure", capture)
    plot_run(tmp_path)
    test_ax, val_ax = figures["confusion_test.png"].axes[0], figures["confusion_val.png"].axes[0]
    assert "test split" in test_ax.get_title() and "best-epoch=4.ckpt (epoch 4)" in test_ax.get_title()
    assert "val split" in val_ax.get_title() and "checkpoint not recorded" in val_ax.get_title()
    assert [t.get_text() for t in val_ax.get_yticklabels()] == ["dog", "rain"]  # labels.json's names


# ----------------------------------------------------------------------------- k-fold pictures
def test_kfold_writes_pooled_confusion_and_per_fold_summary(monkeypatch, tmp_path):
    from sed.metrics import plot_kfold

    labels = ["dog", "rain"]
    write_confusion_csv(
        tmp_path / "fold1" / "lightning_logs" / "version_0" / "confusion_test.csv", [[4, 1], [2, 3]], labels
    )
    write_confusion_csv(tmp_path / "fold2" / "confusion_test.csv", [[5, 0], [1, 4]], labels)
    rows = [{"fold": 1, "test_acc": 0.7, "test_loss": 0.9}, {"fold": 2, "test_acc": 0.9, "test_loss": 0.5}]
    summary = {"test_acc": {"mean": 0.8, "std": 0.1414}, "test_loss": {"mean": 0.7, "std": 0.28}}
    figures = {}
    import sed.metrics.confusion
    import sed.metrics.run_report

    def capture(fig, out):
        figures[Path(out).name] = fig
        Path(out).write_bytes(b"png")
        return Path(out)

    monkeypatch.setattr(sed.metrics.confusion, "save_figure", capture)
    monkeypatch.setattr(sed.metrics.run_report, "save_figure", capture)
    out = plot_kfold(tmp_path, rows, summary, checkpoint="best")
    assert (
        set(out["files"]) == {"confusion_pooled", "confusion_pooled_csv", "kfold_summary"}
        and out["notes"] == []
    )
    m, labs = read_confusion_csv(tmp_path / "confusion_pooled.csv")
    np.testing.assert_array_equal(m, [[9, 1], [3, 7]])
    assert labs == labels
    ax = figures["confusion_pooled.png"].axes[0]
    assert "pooled over folds 1, 2" in ax.get_title() and "best" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["0.90\n(9)", "0.10\n(1)", "0.30\n(3)", "0.70\n(7)"]
    ax = figures["kfold_summary.png"].axes[0]
    assert ax.get_ylabel() == "test_acc: fraction (0-1)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fold 1", "fold 2"]
    assert "mean 0.8 ± 0.141 over 2 folds" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["mean 0.8", "per fold", "± 1 std 0.141"]
    assert [p.get_height() for p in ax.containers[0]] == [0.7, 0.9]  # the bars


def test_kfold_pictures_skip_what_is_missing(tmp_path):
    from sed.metrics import plot_kfold

    write_confusion_csv(tmp_path / "fold1" / "confusion_test.csv", [[1, 0], [0, 1]], ["a", "b"])
    write_confusion_csv(tmp_path / "fold2" / "confusion_test.csv", [[1, 0], [0, 1]], ["b", "a"])
    rows = [{"fold": 1, "test_acc": 0.5}, {"fold": 2, "test_acc": 1.0}, {"fold": 3, "test_acc": 0.75}]
    out = plot_kfold(tmp_path, rows, {"test_acc": {"mean": 0.75, "std": 0.25}})
    assert set(out["files"]) == {"kfold_summary"}
    assert any("fold3" in n and "no confusion_test.csv" in n for n in out["notes"])
    assert any("fold2" in n and "other labels" in n for n in out["notes"])
    assert not (tmp_path / "confusion_pooled.csv").exists()
    assert_png(tmp_path / "kfold_summary.png", 5000)
