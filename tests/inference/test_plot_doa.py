"""plot-doa: class names, references apart from predictions, the model in the title (issue 23)."""

import matplotlib.colors as mcolors
import pytest
import torch

import sed.inference.seld
from sed.checkpoint import save_model
from sed.cli.main import main
from sed.inference.seld import plot_doa
from sed.models import create_model


@pytest.fixture
def csvs(tmp_path):
    pred = tmp_path / "fold4_room2_mix001.csv"  # system output: frame,class,track,x,y,z,dist
    pred.write_text("0,0,0,1.0,0.0,0.0,0\n1,0,0,1.0,0.0,0.0,0\n1,2,0,0.0,1.0,0.0,0\n")
    ref = tmp_path / "ref.csv"  # STARSS22 metadata: frame,class,source,azimuth,elevation
    ref.write_text("0,0,0,5,0\n1,0,0,5,0\n2,2,1,90,10\n")
    return pred, ref


@pytest.fixture
def figures(monkeypatch):
    drawn = []

    def capture(fig, out):
        drawn.append(fig)
        return out

    monkeypatch.setattr(sed.inference.seld, "save_figure", capture)
    return drawn


def legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_starss_names_and_references_in_grey(csvs, figures, tmp_path):
    pred, ref = csvs
    plot_doa(pred, tmp_path / "doa.png", ref_csv=ref)
    fig = figures[0]
    assert legend(fig) == ["reference", "Female speech", "Clapping"]
    az = fig.axes[0]
    assert az.get_ylabel() == "azimuth (°)" and fig.axes[1].get_ylabel() == "elevation (°)"
    colours = {c.get_label(): mcolors.to_hex(c.get_facecolor()[0]) for c in az.collections}
    assert colours["reference"] == mcolors.to_hex("0.6")
    assert len({colours["Female speech"], colours["Clapping"], colours["reference"]}) == 3
    assert "fold4_room2_mix001.csv" in az.get_title() and "ref.csv" in az.get_title()
    assert "model not named" in az.get_title()


def test_checkpoint_gives_names_and_the_model_in_the_title(csvs, figures, tmp_path):
    pred, _ = csvs
    torch.manual_seed(0)
    ckpt = save_model(
        tmp_path / "seld.pt", create_model("resnet_conformer_tiny", num_classes=3), ["a", "b", "c"]
    )
    plot_doa(pred, tmp_path / "doa.png", checkpoint=ckpt)
    title = figures[0].axes[0].get_title()
    assert "resnet_conformer_tiny" in title and "seld.pt" in title
    assert legend(figures[0]) == ["a", "c"]


def test_cli_plot_doa_names_the_checkpoint(csvs, tmp_path, capsys):
    pred, ref = csvs
    ckpt = save_model(tmp_path / "seld.pt", create_model("resnet_conformer_tiny", num_classes=13))
    out = tmp_path / "doa.png"
    assert main(["plot-doa", str(pred), "--ref", str(ref), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = save_model(tmp_path / "cnn.pt", create_model("cnn_tiny", num_classes=3))
    assert main(["plot-doa", str(pred), "--checkpoint", str(wrong), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cnn.pt" in err and "takes a SELD model" in err
    assert not (tmp_path / "x.png").exists()
