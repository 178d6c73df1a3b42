"""An exported .onnx as a checkpoint: sedkit classify / sed.Classifier through onnxruntime, and the
one-line CheckpointError of ONNX files that are not sed exports."""

import json
import re

import numpy as np
import onnx
import pytest
import torch

from sed.cli.main import main
from sed.errors import CheckpointError
from sed.inference.classifier import Classifier
from sed.inference.runtime import OnnxModel


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("onnx_audio")
    rng = np.random.default_rng(0)
    for i, n in enumerate([5000, 16000, 41000, 23456]):
        sf.write(root / f"f{i}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), 16000)
    (root / "bad.wav").write_bytes(b"junk")
    return root


def _classify(capsys, checkpoint, *args):
    capsys.readouterr()
    rc = main(["classify", *args, "--checkpoint", str(checkpoint), "--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["ast", "cnn"])
@pytest.mark.parametrize("mode", [["--format", "json"], ["--format", "csv", "--window", "1.0", "--hop", "0.4"],
                                  ["--format", "json", "--top-k", "2", "--batch-size", "3"]])
def test_classify_onnx_gives_the_json_of_the_pt(exported, audio, capsys, name, mode):
    _, pt, path = exported[name]
    files = sorted(map(str, audio.glob("*.wav")))
    rc_pt, out_pt, err_pt = _classify(capsys, pt, *files, *mode)
    rc_onnx, out_onnx, err_onnx = _classify(capsys, path, *files, *mode)
    assert rc_pt == rc_onnx == 1 and err_pt == err_onnx  # bad.wav: one error line each
    assert err_onnx.count("error:") == 1 and "bad.wav" in err_onnx
    if mode[1] == "json":
        a, b = ([json.loads(x) for x in o.splitlines()] for o in (out_pt, out_onnx))
        assert [r["file"] for r in a] == [r["file"] for r in b]
        for ra, rb in zip(a, b):
            assert [t["label"] for t in ra["top_k"]] == [t["label"] for t in rb["top_k"]]
            assert np.allclose([t["score"] for t in ra["top_k"]], [t["score"] for t in rb["top_k"]], atol=1e-5)
    else:
        assert out_pt.splitlines()[0] == out_onnx.splitlines()[0] and len(out_pt.splitlines()) == len(out_onnx.splitlines())


def test_classifier_from_pretrained_onnx(exported, audio):
    model, _, path = exported["ast"]
    clf = Classifier.from_pretrained(path)
    assert isinstance(clf.model, OnnxModel) and clf.labels == model.labels
    assert (clf.sample_rate, clf.clip_samples) == (16000, model.clip_samples)
    waves = [0.2 * torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (3000, model.clip_samples, 20000)]
    got = clf.score(waves, batch_size=3)  # one batch of three lengths: one onnxruntime call per length
    with torch.inference_mode():
        ref = [torch.softmax(model(w[None, : model.clip_samples]), -1)[0].numpy() for w in waves]
    assert all(np.abs(g.scores - r).max() < 1e-5 for g, r in zip(got, ref))
    emb, _ = clf.embed([str(audio / "f1.wav")])
    assert emb.shape == (1, model.embed(torch.zeros(1, 16000)).shape[-1])
    with pytest.raises(ValueError, match="precision is fixed at export"):
        Classifier.from_pretrained(path, precision="int8")


def _foreign(tmp_path, exported):
    """ONNX files sed did not export, or did not export this way."""
    _, _, good = exported["cnn"]
    out = {"junk": tmp_path / "junk.onnx"}
    out["junk"].write_bytes(b"\x08\x07garbage")
    linear = torch.nn.Linear(4, 3)
    out["no metadata"] = tmp_path / "plain.onnx"
    torch.onnx.export(linear, (torch.zeros(1, 4),), str(out["no metadata"]), input_names=["waveform"],
                      output_names=["logits"], dynamo=False)
    meta = {p.key: p.value for p in onnx.load(str(good)).metadata_props}
    for name, (inp, outp, width) in {"wrong input": ("x", "logits", 5), "another graph": ("waveform", "logits", 7),
                                      "no logits": ("waveform", "scores", 5)}.items():
        path = tmp_path / f"{name.replace(' ', '_')}.onnx"
        torch.onnx.export(torch.nn.Linear(4, width), (torch.zeros(1, 4),), str(path), input_names=[inp],
                          output_names=[outp], dynamo=False)
        proto = onnx.load(str(path))
        proto.metadata_props.add(key="sed", value=meta["sed"])
        onnx.save(proto, str(path))
        out[name] = path
    out["bad json"] = tmp_path / "badjson.onnx"
    proto = onnx.load(str(good))
    proto.metadata_props[0].value = "{oops"
    onnx.save(proto, str(out["bad json"]))
    return out


def test_foreign_onnx_files_are_one_line_checkpoint_errors(exported, audio, tmp_path, capsys):
    reasons = {"junk": "not a readable ONNX model", "no metadata": "without sed metadata",
               "wrong input": "are not ['waveform']", "another graph": "7 classes but its metadata names 5 labels",
               "no logits": "lack 'logits'", "bad json": "is not JSON"}
    for name, path in _foreign(tmp_path, exported).items():
        with pytest.raises(CheckpointError, match=re.escape(reasons[name])) as err:
            OnnxModel(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        rc, _, err_text = _classify(capsys, path, str(audio / "f1.wav"))
        lines = err_text.splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and reasons[name] in lines[0], (name, lines)
