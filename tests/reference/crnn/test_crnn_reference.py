"""sed's CRNN (the DCASE 2024 Task 4 baseline) against the original code (DESED_task; see README.md here).

The manifest's tensors are written as a release checkpoint (Lightning layout: ``state_dict`` with
``sed_student.*``, ``sed_teacher.*``, ``mel_spec.*``; ``hyper_parameters`` with the recipe's ``net``), loaded
through ``create_model("crnn_dcase2024", pretrained=file)`` (the importer) at the real architecture and run on
the clips the reference ran on. "plain": waveforms in (the mixed-length clips as ONE zero-padded batch with
``lengths``, equal to each clip run alone in the reference); "emb": the same stand-in embeddings the
reference got, through ``frames_from_features``, at 3 s, 10 s and a batch (the network after the
embeddings runs as in "plain"; the reference fixtures hold every regime).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sed.models import create_model
from tests.reference import common

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from generate import BEATS_REGIMES, MEL_REGIMES, STUDENT_REGIME, beats_release, embeddings  # noqa: E402

MANIFEST = common.load_manifest(HERE / "weights.json")
RATE = int(MANIFEST["sample_rate"])
REGIMES = MANIFEST["regimes"]
EMB_REGIMES = ["3s", "10s", "batch"]  # the network after the embeddings is the same at every length


@pytest.fixture(autouse=True)
def _no_denormals():
    torch.set_flush_denormal(True)  # random weights make denormals, several times slower on CPUs
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(HERE / "outputs.npz") as z:
        return {k: z[k] for k in z.files}


def release_file(tmp_path: Path, name: str) -> Path:
    manifest = MANIFEST["manifests"][name]
    state = common.tensors_from(manifest)
    mel = create_model("crnn_dcase2024").frontend.mel
    state.update({f"mel_spec.{k}": v for k, v in mel.state_dict().items()})
    path = tmp_path / f"{name}-epoch=259-step=30680.ckpt"
    torch.save({"epoch": 259, "state_dict": state, "hyper_parameters": {"net": manifest["net"]}}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crnn")
    return {
        (name, branch): create_model(
            "crnn_dcase2024", pretrained=release_file(tmp, name), branch=branch
        ).eval()
        for name in ("plain", "emb")
        for branch in ("teacher", "student")
    }


def inputs(regime: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    wave, lengths = common.regime_inputs(regime, RATE)
    return torch.from_numpy(wave), None if lengths is None else torch.tensor(lengths)


def check(frames, clip, ref, key: str, regime: str, valid: list[int] | None = None) -> None:
    want = ref[f"{key}_frames_{regime}"]
    if valid is not None:  # the reference ran each clip alone: compare each clip's own frames
        for i, n in enumerate(valid):
            common.assert_close(frames[i, :n], want[i, :n], f"{key} {regime} clip {i} frames")
            assert not frames[i, n:].any()  # sed's frames after a clip's own are zero
    else:
        common.assert_close(frames, want, f"{key} {regime} frames")
    common.assert_close(clip, ref[f"{key}_clip_{regime}"], f"{key} {regime} clip")


@pytest.mark.parametrize("regime", REGIMES)
def test_waveform_in_frames_and_clip_out(models, ref, regime):
    model = models["plain", "teacher"]
    wave, lengths = inputs(regime)
    with torch.no_grad():
        frames, clip = model.forward_frames(wave, lengths)
    valid = None
    if lengths is not None:
        valid = [int(np.isfinite(ref[f"plain_frames_{regime}"][i, :, 0]).sum()) for i in range(len(lengths))]
        assert valid == [model.num_frames(int(n)) for n in lengths]
    check(frames, clip, ref, "plain", regime, valid)


@pytest.mark.parametrize("regime", EMB_REGIMES)
def test_with_frame_embeddings(models, ref, regime):
    model = models["emb", "teacher"]
    wave, _ = inputs(regime)
    emb = torch.from_numpy(embeddings(wave.shape[0], wave.shape[-1]))
    with torch.no_grad():
        frames, clip = model.frames_from_features(model.features(wave), embeddings=emb)
    check(frames, clip, ref, "emb", regime)


@pytest.mark.parametrize("name", ["plain", "emb"])
def test_the_student_branch_and_parameter_count(models, ref, name):
    model = models[name, "student"]
    assert sum(p.numel() for p in model.parameters()) == int(ref[f"{name}_params"])
    wave, _ = inputs(STUDENT_REGIME)
    emb = torch.from_numpy(embeddings(1, wave.shape[-1])) if name == "emb" else None
    with torch.no_grad():
        frames, clip = model.frames_from_features(model.features(wave), embeddings=emb)
    check(frames, clip, ref, f"{name}_student", STUDENT_REGIME)


@pytest.mark.parametrize("regime", MEL_REGIMES)
def test_frontend(models, ref, regime):
    wave, _ = inputs(regime)
    with torch.no_grad():
        feats = models["plain", "teacher"].features(
            wave
        )  # [B, frames, mels]; the reference's [B, mels, frames]
    common.assert_close(feats.transpose(1, 2), ref[f"mel_{regime}"], f"{regime} front end")


def test_the_release_loads_with_the_quirk_and_the_correct_pooling_differs(models, ref):
    model = models["plain", "teacher"]
    assert model.sed_kwargs()["attention_over_classes"] is True and model.labels[0] == "Alarm_bell_ringing"
    correct = create_model("crnn_dcase2024", **{**model.sed_kwargs(), "attention_over_classes": False}).eval()
    correct.load_state_dict(model.state_dict())
    wave, _ = inputs("10s")
    with torch.no_grad():
        frames, clip = correct.forward_frames(wave)
    common.assert_close(frames, ref["plain_frames_10s"], "frames do not depend on the pooling")
    with torch.no_grad():
        quirk = model.forward_frames(wave)[1]
    # softmax over time, not classes: the clip scores move by far more than the agreement with the reference
    assert common.max_rel_diff(clip, ref["plain_clip_10s"]) > 100 * common.max_rel_diff(
        quirk, ref["plain_clip_10s"]
    )


@pytest.mark.parametrize("regime", BEATS_REGIMES)
def test_beats_frame_embeddings_are_the_recipes(ref, regime, tmp_path):
    """The CRNN's frozen BEATs (a micro BEATs release file read by sed's BEATs importer) gives the tokens the
    recipe's ``BEATsModel`` stores as ``frame`` embeddings, ``[B, D, N]`` (496 tokens for 10 s)."""
    beats_release(tmp_path / "BEATs_micro.pt")
    model = create_model(
        "crnn_dcase2024",
        num_classes=3,
        embeddings="beats_micro",
        embeddings_pretrained=tmp_path / "BEATs_micro.pt",
    ).eval()
    wave, _ = inputs(regime)
    with torch.no_grad():
        got = model.frame_embeddings(wave)
    common.assert_close(got, ref[f"beats_frame_{regime}"], f"{regime} BEATs frame embeddings")
    assert model.embedding_dim == got.shape[1] and not any(p.requires_grad for p in model.beats.parameters())
