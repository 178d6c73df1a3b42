"""`sedkit demo` end to end at CI size: synth, train, test on the held-out fold, plots, classify."""

from sed.cli.main import main


def test_demo_learns_and_writes_everything(tmp_path, capsys):
    work = tmp_path / "demo"
    code = main(["demo", "--workdir", str(work), "--size", "ci"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]  # 0 means the held-out accuracy passed the 90 % check
    run = work / "run"
    for name in (
        "config.yaml",
        "metrics.csv",
        "learning_curves.png",
        "confusion_test.png",
        "diagnosis.json",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).exists(), name
    assert "held-out accuracy" in out and "5-" in out  # the classify table of held-out files
    epochs = [line.split()[1] for line in err.splitlines() if line.startswith("epoch ")]
    assert epochs == [f"{e}/10" for e in range(1, 11)], err[-2000:]  # progress: stderr is no terminal here
