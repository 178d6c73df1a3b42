"""An exported .onnx as a checkpoint: sedkit classify / sed.Classifier through onnxruntime, and the
one-line CheckpointError of ONNX files that are not sed exports."""

import json
import re

import numpy as np
import onnx
import pytest
import torch

from sed.cli.main import main
from sed.data.clips import crop_span
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
@pytest.mark.parametrize(
    "mode",
    [
        ["--format", "json"],
        ["--format", "csv", "--window", "1.0", "--hop", "0.4"],
        ["--format", "json", "--top-k", "2", "--batch-size", "3"],
    ],
)
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
            assert np.allclose(
                [t["score"] for t in ra["top_k"]], [t["score"] for t in rb["top_k"]], atol=1e-5
            )
    else:
        assert out_pt.splitlines()[0] == out_onnx.splitlines()[0] and len(out_pt.splitlines()) == len(
            out_onnx.splitlines()
        )


def test_classifier_from_pretrained_onnx(exported, audio):
    model, _, path = exported["ast"]
    clf = Classifier.from_pretrained(path)
    assert isinstance(clf.model, OnnxModel) and clf.labels == model.labels
    assert (clf.sample_rate, clf.clip_samples) == (16000, model.clip_samples)
    waves = [
        0.2 * torch.randn(n, generator=torch.Generator().manual_seed(n))
        for n in (3000, model.clip_samples, 20000)
    ]
    got = clf.score(waves, batch_size=3)  # one batch of three lengths: one onnxruntime call per length
    spans = [crop_span(len(w), model.clip_samples, train=False) for w in waves]  # the crop policy: the centre
    with torch.inference_mode():
        ref = [torch.softmax(model(w[None, a:b]), -1)[0].numpy() for w, (a, b) in zip(waves, spans)]
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
    torch.onnx.export(
        linear,
        (torch.zeros(1, 4),),
        str(out["no metadata"]),
        input_names=["waveform"],
        output_names=["logits"],
        dynamo=False,
    )
    meta = {p.key: p.value for p in onnx.load(str(good)).metadata_props}
    for name, (inp, outp, width) in {
        "wrong input": ("x", "logits", 5),
        "another graph": ("waveform", "logits", 7),
        "no logits": ("waveform", "scores", 5),
    }.items():
        path = tmp_path / f"{name.replace(' ', '_')}.onnx"
        torch.onnx.export(
            torch.nn.Linear(4, width),
            (torch.zeros(1, 4),),
            str(path),
            input_names=[inp],
            output_names=[outp],
            dynamo=False,
        )
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
    reasons = {
        "junk": "not a readable ONNX model",
        "no metadata": "without sed metadata",
        "wrong input": "are not ['waveform']",
        "another graph": "7 classes but its metadata names 5 labels",
        "no logits": "lack 'logits'",
        "bad json": "is not JSON",
    }
    for name, path in _foreign(tmp_path, exported).items():
        with pytest.raises(CheckpointError, match=re.escape(reasons[name])) as err:
            OnnxModel(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        rc, _, err_text = _classify(capsys, path, str(audio / "f1.wav"))
        lines = err_text.splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and reasons[name] in lines[0], (
            name,
            lines,
        )


# ---------------------------------------------------------------------- fixed-batch graphs (issue 23)
@pytest.fixture(scope="module")
def fixed_batch(exported, tmp_path_factory):
    """The CNN exported with --no-dynamic-batch (batch 1)."""
    from sed.export.onnx import export_onnx

    model, pt, _ = exported["cnn"]
    return export_onnx(model, tmp_path_factory.mktemp("b1") / "b1.onnx", dynamic_batch=False, source=pt)[
        "path"
    ]


@pytest.mark.parametrize(
    "mode", [["--format", "json"], ["--format", "json", "--window", "1.0", "--hop", "0.4"]]
)
def test_a_fixed_batch_export_classifies_like_the_dynamic_one(exported, fixed_batch, audio, capsys, mode):
    files = sorted(map(str, audio.glob("f*.wav")))
    rc_dyn, out_dyn, _ = _classify(capsys, exported["cnn"][2], *files, *mode)  # batches of 8
    rc_b1, out_b1, err_b1 = _classify(capsys, fixed_batch, *files, *mode)
    assert rc_dyn == rc_b1 == 0 and "error" not in err_b1
    a, b = ([json.loads(x) for x in o.splitlines()] for o in (out_dyn, out_b1))
    assert len(a) == len(b) >= len(files)
    for ra, rb in zip(a, b):
        assert ra["file"] == rb["file"] and [t["label"] for t in ra["top_k"]] == [
            t["label"] for t in rb["top_k"]
        ]
        assert np.allclose([t["score"] for t in ra["top_k"]], [t["score"] for t in rb["top_k"]], atol=1e-6)


def test_a_fixed_batch_export_embeds_like_the_dynamic_one(exported, fixed_batch, audio):
    files = sorted(map(str, audio.glob("f*.wav")))
    dyn, _ = Classifier.from_pretrained(exported["cnn"][2]).embed(files, batch_size=8)
    b1, _ = Classifier.from_pretrained(fixed_batch).embed(files, batch_size=8)
    assert b1.shape == dyn.shape and np.abs(b1 - dyn).max() < 1e-6


def test_a_fixed_batch_of_three_runs_in_padded_chunks(tmp_path):
    """Eight clips of mixed lengths through a graph of fixed batch 3: three calls per length group, the last
    one padded with zero rows, and every clip gets exactly what the dynamic graph gives it."""
    from tests.export.fixtures import tiny_graph

    for name, batch in (("dyn", "batch"), ("b3", 3)):
        onnx.save(tiny_graph(batch=batch), str(tmp_path / f"{name}.onnx"))
    dyn, b3 = OnnxModel(tmp_path / "dyn.onnx"), OnnxModel(tmp_path / "b3.onnx")
    assert (dyn.batch, b3.batch) == (None, 3)
    wave = torch.randn(8, 3000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3000, 1000, 3000, 3000, 500, 3000, 1000, 3000])
    for fn in ("__call__", "embed"):
        ref, got = getattr(dyn, fn)(wave, lengths), getattr(b3, fn)(wave, lengths)
        assert got.shape == ref.shape and torch.equal(got, ref), fn


# ---------------------------------------------------------------------- impossible graphs (issue 23)
def _graph_file(tmp_path, name, **kw):
    from tests.export.fixtures import tiny_graph

    path = tmp_path / f"{name}.onnx"
    onnx.save(tiny_graph(**kw), str(path))
    return path


def test_impossible_graphs_are_one_line_checkpoint_errors(tmp_path, audio, capsys):
    from onnx import TensorProto

    from tests.export.fixtures import tiny_description

    cases = {
        "zero samples": (dict(samples=0), "takes 0 samples"),
        "zero batch": (dict(batch=0), "batch of 0"),
        "huge batch": (dict(batch=1 << 20), "batch of 1048576"),
        "samples below the described": (dict(samples=100), "takes 100 samples, outside the 400 to 57600000"),
        "samples above the described": (
            dict(samples=5000, desc=tiny_description(onnx_input_samples=[400, 4000])),
            "takes 5000 samples, outside the 400 to 4000",
        ),
        "int logits": (dict(logits_type=TensorProto.INT64), "'logits' are tensor(int64), not float"),
        "int embedding": (dict(embedding_type=TensorProto.INT32), "'embedding' are tensor(int32), not float"),
        "int input": (dict(input_type=TensorProto.INT16), "'waveform' is tensor(int16), not float"),
        "control": ({}, None),  # the same graph with dynamic dims loads
        "1-d logits": (dict(sum_batch="drop"), "'logits' have 1 dimensions, not 2"),
        "batches disagree": (dict(sum_batch="keep"), "'logits' have a batch of 1, its input a dynamic one"),
    }
    for name, (kw, reason) in cases.items():
        path = _graph_file(tmp_path, name.replace(" ", "_"), **kw)
        if reason is None:
            assert OnnxModel(path).num_classes == 5
            continue
        with pytest.raises(CheckpointError, match=re.escape(reason)) as err:
            OnnxModel(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value), name
        rc, _, err_text = _classify(capsys, path, str(audio / "f1.wav"))
        lines = err_text.splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], (
            name,
            lines,
        )


def test_a_fixed_length_graph_scores_clips_cut_or_padded_to_its_length(tmp_path):
    path = _graph_file(tmp_path, "fixed", batch=1, samples=8000)
    model = OnnxModel(path)
    assert model.input_samples == (8000, 8000) and model.max_samples == 8000
    clf = Classifier.from_pretrained(path)
    got = clf.score([torch.ones(3000), torch.ones(20000)], batch_size=8)
    assert all(r.error is None and r.scores.shape == (5,) for r in got)


def test_names_and_metadata_that_are_not_utf8_are_one_line(tmp_path, audio, capsys):
    """Found by tests/fuzz/test_fuzz_onnx.py: was a UnicodeDecodeError traceback, with ONNX Runtime's
    provider-fallback notes printed on stdout."""
    from tests.export.fixtures import tiny_graph

    data = tiny_graph().SerializeToString()
    for name, old in (("metadata", b'"dog"'), ("output name", b"\x06logits")):
        path = tmp_path / f"{name.replace(' ', '_')}.onnx"
        path.write_bytes(data.replace(old, old[:-3] + b"\xff\xfe\xfd", 1))
        with pytest.raises(CheckpointError, match="not a readable ONNX model") as err:
            OnnxModel(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
        rc, out, err_text = _classify(capsys, path, str(audio / "f1.wav"), "--format", "json")
        assert rc == 2 and out == "" and len(err_text.splitlines()) == 1, (name, out, err_text)


def test_dim_names_that_are_not_utf8_are_one_line(tmp_path):
    """Found by the fuzz target's long profile: a dim name that is not UTF-8 failed when its shape was
    read."""
    from tests.export.fixtures import tiny_graph

    path = tmp_path / "dim.onnx"
    path.write_bytes(tiny_graph().SerializeToString().replace(b"\x05batch", b"\x05\x80atch"))
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        OnnxModel(path)
