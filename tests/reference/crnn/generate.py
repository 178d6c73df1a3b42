"""Reference fixtures for the DCASE 2024 Task 4 baseline CRNN, produced by the original code
(github.com/DCASE-REPO/DESED_task).

Usage (from the sed repository root)::

    python tests/reference/crnn/generate.py --ref /work/ref/desed

``--ref`` is a work tree of the reference repository at the commit named in this folder's README (only
``desed_task/`` and ``recipes/dcase2024_task4_baseline/`` are needed). Two random-weight baselines are built
with the recipe's ``confs/pretrained.yaml`` ``net`` section (``CRNN(**config["net"])`` as
``train_pretrained.py`` does): "emb" as configured (768-d frame embeddings, ``aggregation_type: pool1d``)
and "plain" with ``use_embeddings: False``. Each is filled from a manifest (``tests.reference.common``),
saved in the release layout (a Lightning checkpoint: ``state_dict`` with ``sed_student.*``,
``sed_teacher.*`` and the ``mel_spec.*`` buffers, ``hyper_parameters`` = the config) and loaded back with
``load_state_dict(checkpoint["state_dict"])`` into a module holding ``sed_student``, ``sed_teacher`` and
``mel_spec`` as ``SEDTask4`` does. Then ``SEDTask4.detect`` (the recipe's own method, with its
``take_log`` and the ``TorchScaler("instance", "minmax", [1, 2])`` of the config) runs the teacher (and the
student once) in eval mode on ``common.signal`` clips, each at its own length; "emb" gets the embeddings of
:func:`embeddings` (what the recipe reads from its hdf5 files). Writes ``outputs.npz`` and ``weights.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the sed repository root, for tests.reference.common
from tests.reference import common  # noqa: E402

RATE = 16000
SEEDS = {"plain": 20240601, "emb": 20240602}
REGIMES = [*(f"{s:g}s" for s in common.LENGTHS), "batch", "mixed"]
MEL_REGIMES = ("1s", "3s")
STUDENT_REGIME = "3s"
BEATS_REGIMES = ("1s", "3s", "10s")  # the recipe's BEATsModel "frame" embeddings of a micro BEATs
BEATS_MANIFEST = HERE.parent / "beats" / "weights.json"


def beats_release(path: Path) -> None:
    """The micro BEATs of ``tests/reference/beats`` as a release file ``{cfg, model}`` (layer i > 0 holds the
    reference's alias of layer 0's relative position table, as a state dict of the reference does)."""
    manifest = common.load_manifest(BEATS_MANIFEST)
    state = common.tensors_from(manifest)
    table = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    for i in range(1, manifest["cfg"]["encoder_layers"]):
        state[table.format(i)] = state[table.format(0)]
    torch.save({"cfg": manifest["cfg"], "model": state}, path)


def beats_tokens(samples: int) -> int:
    """Tokens BEATs gives for a clip: 8 frequency patches x (Kaldi frames // 16) time patches."""
    return 8 * ((1 + (samples - 400) // 160) // 16)


def embeddings(batch: int, samples: int, dim: int = 768) -> np.ndarray:
    """Deterministic stand-in frame embeddings ``[batch, dim, tokens]`` for clips of ``samples``."""
    rng = np.random.default_rng([7, batch, samples, dim])
    return rng.standard_normal((batch, dim, beats_tokens(samples))).astype(np.float32)


def manifest_entries(state: dict[str, torch.Tensor]) -> list[dict]:
    entries = []
    for key, t in state.items():
        shape = tuple(t.shape)
        if not t.dtype.is_floating_point:
            entries.append(common.manifest_entry(key, shape, str(t.dtype).replace("torch.", "")))
        elif key.endswith("running_var"):
            entries.append(common.manifest_entry(key, shape, mean=1.0, std=0.2, positive=True))
        elif key.endswith("running_mean"):
            entries.append(common.manifest_entry(key, shape, std=0.1))
        elif t.dim() == 4:
            entries.append(common.manifest_entry(key, shape, std=math.sqrt(2.0 / (shape[1] * 9))))
        elif t.dim() == 2:
            entries.append(common.manifest_entry(key, shape, std=1.0 / math.sqrt(shape[1])))
        elif "batchnorm" in key and key.endswith("weight"):
            entries.append(common.manifest_entry(key, shape, mean=1.0, std=0.1))
        else:
            entries.append(common.manifest_entry(key, shape, std=0.1))
    return entries


def _import_reference(ref: Path):
    sys.path[:0] = [str(ref), str(ref / "recipes" / "dcase2024_task4_baseline")]

    class _Absent(types.ModuleType):  # imported by the trainer module, unused by what runs here
        def __getattr__(self, name):
            return None

    for name in ("codecarbon", "psds_eval", "thop"):
        sys.modules.setdefault(name, _Absent(name))
    import yaml
    from desed_task.nnet.CRNN import CRNN
    from desed_task.utils.scaler import TorchScaler
    from local.beats.BEATs import BEATsModel
    from local.sed_trainer_pretrained import SEDTask4
    from torchaudio.transforms import MelSpectrogram

    config = yaml.safe_load((ref / "recipes/dcase2024_task4_baseline/confs/pretrained.yaml").read_text())
    return CRNN, TorchScaler, SEDTask4, MelSpectrogram, BEATsModel, config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="work tree of github.com/DCASE-REPO/DESED_task")
    ap.add_argument("--out", default=str(HERE), help="folder for outputs.npz and weights.json")
    args = ap.parse_args()
    CRNN, TorchScaler, SEDTask4, MelSpectrogram, BEATsModel, config = _import_reference(
        Path(args.ref).resolve()
    )
    feats, sc = config["feats"], config["scaler"]
    mel_spec = MelSpectrogram(  # SEDTask4.__init__'s construction from the config's feats
        sample_rate=feats["sample_rate"],
        n_fft=feats["n_window"],
        win_length=feats["n_window"],
        hop_length=feats["hop_length"],
        f_min=feats["f_min"],
        f_max=feats["f_max"],
        n_mels=feats["n_mels"],
        window_fn=torch.hamming_window,
        wkwargs={"periodic": False},
        power=1,
    )
    task = types.SimpleNamespace(scaler=TorchScaler(sc["statistic"], sc["normtype"], sc["dims"]))
    task.take_log = types.MethodType(SEDTask4.take_log, task)
    out, manifests = {}, {}
    for name, seed in SEEDS.items():
        net = dict(config["net"], use_embeddings=name == "emb")
        torch.manual_seed(0)
        skeleton = torch.nn.Module()
        skeleton.sed_student, skeleton.sed_teacher, skeleton.mel_spec = CRNN(**net), CRNN(**net), mel_spec
        out[f"{name}_params"] = np.array(sum(p.numel() for p in skeleton.sed_student.parameters()))
        manifest = {"seed": seed, "tensors": manifest_entries(skeleton.state_dict()), "net": net}
        tensors = common.tensors_from(manifest)
        for k, v in mel_spec.state_dict().items():  # the buffers a release file holds, as they are
            tensors[f"mel_spec.{k}"] = v
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "epoch=259-step=30680.ckpt"
            torch.save(
                {"epoch": 259, "state_dict": tensors, "hyper_parameters": {**config, "net": net}}, path
            )
            checkpoint = torch.load(path)
            skeleton.load_state_dict(checkpoint["state_dict"])  # strict, as the recipe's test_from_checkpoint
        skeleton.eval()
        manifests[name] = manifest
        for regime in REGIMES:
            wave, lengths = common.regime_inputs(regime, RATE)
            clips = [wave[i : i + 1, :n] for i, n in enumerate(lengths)] if lengths else [wave]
            strong, weak = [], []
            for clip in clips:
                x = torch.from_numpy(np.ascontiguousarray(clip))
                emb = torch.from_numpy(embeddings(x.shape[0], x.shape[-1])) if name == "emb" else None
                with torch.no_grad():
                    s, w = SEDTask4.detect(task, mel_spec(x), skeleton.sed_teacher, embeddings=emb)
                    if regime == STUDENT_REGIME:
                        ss, sw = SEDTask4.detect(task, mel_spec(x), skeleton.sed_student, embeddings=emb)
                        out[f"{name}_student_frames_{regime}"] = ss.transpose(1, 2).numpy()
                        out[f"{name}_student_clip_{regime}"] = sw.numpy()
                strong.append(s.transpose(1, 2).numpy())
                weak.append(w.numpy())
            if lengths:  # each clip alone; frames padded with NaN to the longest
                width = max(s.shape[1] for s in strong)
                strong = [
                    np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=np.nan)
                    for s in strong
                ]
            out[f"{name}_frames_{regime}"] = np.concatenate(strong).astype(np.float32)
            out[f"{name}_clip_{regime}"] = np.concatenate(weak).astype(np.float32)
            if name == "plain" and regime in MEL_REGIMES:
                with torch.no_grad():
                    out[f"mel_{regime}"] = task.scaler(
                        task.take_log(mel_spec(torch.from_numpy(wave)))
                    ).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        beats_release(Path(tmp) / "BEATs_micro.pt")
        beats = BEATsModel(str(Path(tmp) / "BEATs_micro.pt")).eval()  # as extract_embeddings.py loads it
        for regime in BEATS_REGIMES:
            wave, _ = common.regime_inputs(regime, RATE)
            with torch.no_grad():
                out[f"beats_frame_{regime}"] = beats(torch.from_numpy(wave))["frame"].numpy()
    np.savez_compressed(Path(args.out) / "outputs.npz", **out)
    common.save_manifest(
        Path(args.out) / "weights.json", 0, [], sample_rate=RATE, regimes=REGIMES, manifests=manifests
    )


if __name__ == "__main__":
    main()
