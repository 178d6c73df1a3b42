"""`sedkit seld-eval` end to end on a synthetic STARSS corpus."""

import json
import shutil

import pytest

from sed.cli.main import main
from sed.data.synth.corpora import make_starss


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss")
    make_starss(root, seed=1, files_per_split=2, duration=6.0)
    return root


def test_seld_eval_reference_against_itself_is_perfect(corpus, capsys):
    # micro: a class absent from reference and prediction scores F = 0 in the official macro average
    ref = corpus / "metadata_dev"
    assert main(["seld-eval", "--pred", str(ref), "--ref", str(ref), "--json", "--average", "micro"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"ER", "F", "LE", "LR", "SELD"}
    assert r["ER"] == pytest.approx(0) and r["F"] == pytest.approx(1) and r["LR"] == pytest.approx(1)
    assert r["LE"] == pytest.approx(0, abs=1e-5) and r["SELD"] == pytest.approx(0, abs=1e-6)


def test_seld_eval_missing_prediction_and_table(corpus, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(corpus / "metadata_dev", pred)
    victim = sorted(pred.rglob("*.csv"))[0]
    victim.unlink()
    assert (
        main(["seld-eval", "--pred", str(pred), "--ref", str(corpus / "metadata_dev"), "--year", "2024"]) == 0
    )
    out, err = capsys.readouterr()
    assert f"no prediction for reference {victim.stem}" in err
    assert "F" in out and "DOAE" in out


def test_seld_eval_malformed_row_names_file_and_line(corpus, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(corpus / "metadata_dev", pred)
    bad = sorted(pred.rglob("*.csv"))[1]
    bad.write_text("0,1,0,10,20\n1,oops\n")
    assert main(["seld-eval", "--pred", str(pred), "--ref", str(corpus / "metadata_dev")]) == 1
    err = capsys.readouterr().err
    assert bad.name in err and "line 2" in err


def test_seld_eval_empty_reference_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    assert main(["seld-eval", "--pred", str(tmp_path), "--ref", str(tmp_path / "ref")]) == 2
    assert "error:" in capsys.readouterr().err


def test_prepare_starss_counts_and_cache(corpus, tmp_path, capsys):
    assert main(["prepare", "starss", "--root", str(corpus), "--cache", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    assert "fold" in out and "all" in out and "features cached under" in err
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4


def test_prepare_starss_lists_every_problem(corpus, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    csvs = sorted((broken / "metadata_dev").rglob("*.csv"))
    csvs[0].unlink()
    csvs[1].write_text("0,1,0,10,20\nbad row\n")
    assert main(["prepare", "starss", "--root", str(broken)]) == 1
    err = capsys.readouterr().err
    assert csvs[0].stem in err and csvs[1].name in err and err.count("error:") >= 2


def test_prepare_icbhi(tmp_path, capsys):
    from sed.data.synth.corpora import make_icbhi

    root = tmp_path / "icbhi"
    make_icbhi(root, seed=0, num_patients=3, recordings_per_patient=1, duration=8.0)
    assert main(["prepare", "icbhi", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "normal" in out and "train" in out
    next(root.glob("*.txt")).unlink()
    assert main(["prepare", "icbhi", "--root", str(root)]) == 1
    assert "error:" in capsys.readouterr().err
