"""Reference outputs of the ORIGINAL AST code (github.com/YuanGongND/ast @ 31088be) for sed's AST tests.

Run with the reference's own environment (timm 0.4.5, see README.md):

    /work/venvs/ast/bin/python tests/reference/ast/generate.py --ref /work/refs/ast

What it does, all with the reference's code imported from ``--ref``:

1. builds ``src/models/ast_models.py`` ``ASTModel(label_dim=527, fstride=10, tstride=10, input_fdim=128,
   input_tdim=1024, imagenet_pretrain=False, audioset_pretrain=False, model_size='tiny224')``;
2. fills ``torch.nn.DataParallel(model).state_dict()`` (the release layout: ``module.v.*``,
   ``module.mlp_head.*``) with tensors made by ``tests.reference.common`` from a manifest written here
   (``weights.json``);
3. saves that dict with ``torch.save`` as ``audioset_10_10_0.4593.pth`` in a temp dir and loads it back the
   way the reference loads its release files (strides parsed from the file name as in
   ``pretrained_models/load_pretrained_model.py``; ``torch.load`` + ``DataParallel`` + strict
   ``load_state_dict`` as in ``egs/audioset/inference.py``);
4. runs the reference's evaluation path on ``common.signal`` clips written as float32 wav files: the
   ``src/dataloader.py`` ``AudiosetDataset`` with the evaluation ``audio_conf`` of ``src/run.py`` (no
   SpecAugment, no mixup, no noise; AudioSet mean/std), batched by a ``torch.utils.data.DataLoader`` as
   ``traintest.validate`` does, then the model under ``torch.no_grad()``; the logits (before ``validate``'s
   sigmoid) are written.

Shim (documented in README.md): ``torchaudio.load`` needs torchcodec here, so the ``torchaudio`` module the
reference's dataloader uses gets a ``load`` that reads the wav with soundfile (float32 subtype: the very
samples of ``common.signal``, ``[channels, samples]`` float32, as ``torchaudio.load(normalize=True)`` returns
them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the sed repository root, for tests.reference.common (not sed)
from tests.reference import common  # noqa: E402

RATE = 16000
SEED = 1234
RELEASE_NAME = "audioset_10_10_0.4593.pth"
#: rows of the [1024, 128] fbank kept in outputs.npz (all 1024 would be 512 KB per clip)
FBANK_ROWS = np.arange(3, 1024, 16)
#: the evaluation audio_conf of src/run.py (val_audio_conf) with the AudioSet defaults of its arguments
VAL_AUDIO_CONF = {
    "num_mel_bins": 128,
    "target_length": 1024,
    "freqm": 0,
    "timem": 0,
    "mixup": 0,
    "dataset": "audioset",
    "mode": "evaluation",
    "mean": -4.2677393,
    "std": 4.5689974,
    "noise": False,
}
MODEL_KWARGS = {
    "label_dim": 527,
    "fstride": 10,
    "tstride": 10,
    "input_fdim": 128,
    "input_tdim": 1024,
    "imagenet_pretrain": False,
    "audioset_pretrain": False,
    "model_size": "tiny224",
}


def soundfile_load(path, *args, **kwargs):
    """The shim for ``torchaudio.load``: float32 ``[channels, samples]`` and the sample rate."""
    data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def entry_for(key: str, shape) -> dict:
    """Fill rule per tensor: LayerNorm weights 1 +- 0.1, biases and norm biases 0 +- 0.05, Linear/conv weights
    with std 1/sqrt(fan_in) (so activations stay O(1) and attention is far from uniform), tokens and positions
    0 +- 0.5."""
    shape = list(shape)
    norm = re.search(r"(norm\d?|mlp_head\.0)\.(weight|bias)$", key)
    if norm:
        return common.manifest_entry(
            key, shape, mean=1.0 if norm[2] == "weight" else 0.0, std=0.1 if norm[2] == "weight" else 0.05
        )
    if key.endswith("bias"):
        return common.manifest_entry(key, shape, std=0.05)
    if key.endswith(("cls_token", "dist_token", "pos_embed")):
        return common.manifest_entry(key, shape, std=0.5)
    fan_in = int(np.prod(shape[1:]))
    return common.manifest_entry(key, shape, std=1.0 / np.sqrt(fan_in))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="work tree of github.com/YuanGongND/ast @ 31088be")
    ap.add_argument("--out", default=str(HERE), help="folder for outputs.npz and weights.json")
    args = ap.parse_args()
    ref = Path(args.ref).resolve()
    sys.path.insert(0, str(ref / "src"))
    warnings.filterwarnings("ignore")

    import timm
    import torchaudio

    torchaudio.load = soundfile_load  # the shim (see the module docstring)
    import dataloader  # the reference's src/dataloader.py
    from models.ast_models import ASTModel  # the reference's src/models/ast_models.py

    assert dataloader.torchaudio is torchaudio
    torch.manual_seed(0)

    # 1-2: the model and its release-layout state dict, filled from a manifest
    model = ASTModel(**MODEL_KWARGS, verbose=False)
    release = torch.nn.DataParallel(model).state_dict()
    entries = [entry_for(k, v.shape) for k, v in release.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = common.save_manifest(
        out / "weights.json",
        SEED,
        entries,
        release={
            "file_name": RELEASE_NAME,
            "writer": "torch.save(torch.nn.DataParallel(ASTModel(...)).state_dict(), path)",
            "reference_model": {"class": "src/models/ast_models.py ASTModel", "kwargs": MODEL_KWARGS},
        },
    )
    tensors = common.tensors_from(manifest)
    assert list(tensors) == list(release)
    for key, value in tensors.items():
        assert value.shape == release[key].shape and value.dtype == release[key].dtype, key

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 3: the release file, loaded back as the reference loads its release files
        pretrained_mdl_path = str(tmp / RELEASE_NAME)
        writer = torch.nn.DataParallel(model)
        writer.load_state_dict(tensors)  # strict: every key of the release layout, no other
        torch.save(writer.state_dict(), pretrained_mdl_path)  # as the AST recipe saves its models
        name = pretrained_mdl_path.split("/")[-1]
        fstride, tstride = (
            int(name.split("_")[1]),
            int(name.split("_")[2].split(".")[0]),
        )  # load_pretrained_model.py
        ast_mdl = ASTModel(**{**MODEL_KWARGS, "fstride": fstride, "tstride": tstride}, verbose=False)
        checkpoint = torch.load(pretrained_mdl_path, map_location="cpu")  # inference.py: map_location='cuda'
        audio_model = torch.nn.DataParallel(ast_mdl)
        audio_model.load_state_dict(checkpoint)  # strict, as egs/audioset/inference.py
        audio_model.eval()
        for key, value in audio_model.state_dict().items():
            assert torch.equal(value, tensors[key]), key

        # 4: the clips as float32 wav files, through the reference's evaluation dataset
        clips = {f"{s:g}s": [common.signal(s, RATE, 0)] for s in common.LENGTHS}
        clips["batch"] = [common.signal(3.0, RATE, seed) for seed in (1, 2, 3)]
        clips["mixed"] = [common.signal(s, RATE, seed) for s, seed in zip(common.MIXED, (4, 5, 6))]
        data, index = [], {}
        for regime, waves in clips.items():
            index[regime] = []
            for i, wave in enumerate(waves):
                wav = tmp / f"{regime}_{i}.wav"
                soundfile.write(wav, wave.T, RATE, subtype="FLOAT")
                assert np.array_equal(soundfile_load(wav)[0].numpy(), wave)
                index[regime].append(len(data))
                data.append({"wav": str(wav), "labels": "/m/09x0r"})
        data_json = tmp / "eval_data.json"
        data_json.write_text(json.dumps({"data": data}))
        label_csv = ref / "egs" / "audioset" / "data" / "class_labels_indices.csv"
        dataset = dataloader.AudiosetDataset(
            str(data_json), label_csv=str(label_csv), audio_conf=VAL_AUDIO_CONF
        )

        def run(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
            """One DataLoader batch of ``indices`` through the model, as traintest.validate does."""
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, indices),
                batch_size=len(indices),
                shuffle=False,
                num_workers=0,
            )
            ((audio_input, _labels),) = list(loader)
            with torch.no_grad():
                audio_output = audio_model(audio_input)
            return audio_output.numpy(), audio_input.numpy()

        outputs, report = {}, {}
        for regime, idx in index.items():
            if regime == "mixed":  # the reference has no lengths: each clip alone
                runs = [run([i]) for i in idx]
                logits, fbank = np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])
            else:
                logits, fbank = run(idx)
            if regime == "batch":  # the same clips alone: the batch changes nothing in the reference
                alone = np.concatenate([run([i])[0] for i in idx])
                report["batch_vs_alone"] = common.max_rel_diff(alone, logits)
            assert fbank.shape == (len(idx), 1024, 128) and logits.shape == (len(idx), 527)
            outputs[f"{regime}_logits"] = logits.astype(np.float32)
            outputs[f"{regime}_fbank"] = fbank[:, FBANK_ROWS].astype(np.float32)
            report[regime] = (float(logits.min()), float(logits.max()))
        outputs["fbank_rows"] = FBANK_ROWS.astype(np.int64)
        np.savez_compressed(out / "outputs.npz", **outputs)

    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "soundfile": soundfile.__version__,
    }
    print(json.dumps({"versions": versions, "report": report}, indent=1))


if __name__ == "__main__":
    main()
