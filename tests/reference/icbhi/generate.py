"""Reference fixtures for the ICBHI loader: the Patch-Mix repository's own ``ICBHIDataset`` on a synthetic corpus.

Usage (the reference checkout is a plain work tree of raymin0223/patch-mix_contrastive_learning)::

    /work/venvs/patchmix/bin/python tests/reference/icbhi/generate.py --ref /work/refs/patchmix

:func:`write_corpus` writes a small ICBHI-like corpus (recordings at 44.1, 10 and 4 kHz whose audio is
:func:`tests.reference.common.signal`, their tab-separated cycle annotations, ``official_split.txt`` and
``patient_list_foldwise.txt``) into one flat folder, the layout ``sed.data.corpora.icbhi`` reads. The
generator lays the same files out as the reference expects (``<data>/icbhi_dataset/audio_test_data/`` + the
split files and the repository's own ``metadata.txt`` in ``<data>/icbhi_dataset/``), builds the datasets
through the reference's ``main.set_loader`` (the train and the test ``ICBHIDataset`` with their transforms)
and records, per cycle: the 8-s waveform it holds (``dataset.audio_data``), the fbank the model is fed (the
test loader's batches; for training cycles the evaluation transform applied to ``dataset.audio_images``, i.e.
everything but the random SpecAugment), the label (4 and 2 classes) and the split (official, folds 0 and 1).

The ICBHI score: the reference's ``main.validate`` (hits and counts per label, ``get_score``) on the logits
and labels of :data:`SCORE_CASES` (:func:`score_inputs`), with ``--two_cls_eval`` off and on (``score.json``).

The waveform and the fbank are stored at a fixed subset of positions (:data:`WAVE_IDX`, :data:`FRAME_IDX`)
to keep the fixture small; the test compares sed at the same positions.

Shims (documented in README.md): torchaudio 2.11's ``load`` needs torchcodec, so ``torchaudio.load`` is
replaced by a soundfile reader returning the same thing (float32 ``[channels, samples]`` in [-1, 1]);
``torch.Tensor.cuda`` is a no-op for the score run (no GPU here).
"""  # noqa: E501 (the first line is the argparse description: kept whole)

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.reference import common  # noqa: E402

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
TARGET = 8 * SAMPLE_RATE  # --desired_length 8
FRAMES = 798  # kaldi frames of 8 s
N_MELS = 128

# (stem, file sample rate, seconds, signal seed, official split, cycles (start, end, crackles, wheezes))
RECORDINGS = [
    (
        "101_1b1_Al_sc_Meditron",
        44100,
        12.0,
        11,
        "train",
        [
            ("0.036", "1.579", 0, 0),  # short, starts inside the recording's fade-in
            ("1.579", "9.579", 1, 0),  # exactly 8 s (128000 samples): repeat branch, faded out
            ("2.002", "11.963", 0, 1),  # longer (9.96 s): head kept; int(2.002 * 16000) = 32031, not 32032
            ("10.2", "13.5", 1, 1),  # runs past the end of the recording (12 s)
        ],
    ),
    (
        "104_1b1_Ar_sc_Litt3200",
        4000,
        10.0,
        12,
        "test",
        [
            ("0.5", "2.25", 1, 1),
            ("1.0", "9.0", 1, 0),  # exactly 8 s
            ("2.25", "10.25", 0, 0),  # 8 s annotated, cut to 7.75 s by the end of the recording
            ("0.0", "9.8", 0, 1),  # longer, from sample 0
        ],
    ),
    (
        "107_2b3_Pl_mc_AKGC417L",
        10000,
        9.0,
        13,
        "test",
        [
            ("0.0", "0.5", 0, 1),  # 0.5 s: tiled 16 times
            ("3.1", "4.7", 0, 0),
            ("0.45", "8.45", 1, 1),  # exactly 8 s
        ],
    ),
    (
        "122_2b1_Tc_mc_LittC2SE",
        44100,
        3.0,
        14,
        "train",
        [
            ("0.2", "2.9", 1, 0),
            ("2.9", "3.0", 0, 0),  # 0.1 s inside the fade-out, tiled 80 times
        ],
    ),
]
PATIENT_FOLDS = {101: 0, 104: 1, 107: 0, 122: 2}
FOLDS = ("official", "0", "1")

#: the recorded positions: every 61st sample and the last 64 (the fade-out) of the 8-s waveform;
#: every 31st frame and the last 4 of the 798-frame fbank
WAVE_IDX = np.unique(np.r_[np.arange(0, TARGET, 61), np.arange(TARGET - 64, TARGET)])
FRAME_IDX = np.unique(np.r_[np.arange(0, FRAMES, 31), np.arange(FRAMES - 4, FRAMES)])


#: ICBHI score cases: name -> (seed, samples, classes, kind, batch size); inputs from :func:`score_inputs`
SCORE_CASES = {
    "random": (0, 50, 4, "random", 8),
    "perfect": (1, 24, 4, "perfect", 8),
    "all_normal": (2, 30, 4, "all_normal", 8),
    "no_normals": (3, 21, 4, "no_normals", 5),
    "no_both": (4, 33, 4, "no_both", 8),
    "confusions": (5, 16, 4, "confusions", 8),
    "ties": (6, 12, 4, "ties", 4),
    "two_classes": (7, 40, 2, "random", 8),
}


def score_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits float32 ``[N, C]`` and labels int64 ``[N]`` of a score case (numpy PCG64, deterministic)."""
    seed, n, c, kind, _ = SCORE_CASES[name]
    rng = np.random.default_rng([seed, 41])
    labels = rng.integers(0, c, size=n)
    logits = rng.standard_normal((n, c))
    if kind == "perfect":
        logits = 3.0 * np.eye(c)[labels] + 0.1 * logits
    elif kind == "all_normal":
        logits[:, 0] += 10.0
    elif kind == "no_normals":
        labels = rng.integers(1, c, size=n)
    elif kind == "no_both":
        labels = rng.integers(0, 3, size=n)
    elif kind == "confusions":  # crackle -> wheeze, wheeze -> both, both -> crackle, normal -> normal
        labels = np.repeat([1, 2, 3, 0], n // 4)
        logits = np.eye(c)[np.array([0, 2, 3, 1])[labels]]
    elif kind == "ties":  # exact ties: the first maximum is the prediction
        logits = np.zeros((n, c))
        logits[1::3, 2:] = 1.0
        logits[2::3, [1, 3]] = 1.0
    return logits.astype(np.float32), labels.astype(np.int64)


def write_corpus(root: str | Path) -> Path:
    """Write the synthetic corpus into ``root`` (flat: recordings, annotations, split files);
    deterministic."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stem, rate, seconds, seed, _, rows in RECORDINGS:
        sf.write(root / f"{stem}.wav", common.signal(seconds, rate, seed)[0], rate, subtype="PCM_16")
        (root / f"{stem}.txt").write_text("".join(f"{s}\t{e}\t{c}\t{w}\n" for s, e, c, w in rows))
    (root / "official_split.txt").write_text("".join(f"{r[0]}\t{r[4]}\n" for r in RECORDINGS))
    (root / "patient_list_foldwise.txt").write_text("".join(f"{p} {f}\n" for p, f in PATIENT_FOLDS.items()))
    return root


def cycle_keys() -> list[tuple[str, int]]:
    """``(recording, row)`` of every cycle, the order of the fixture arrays."""
    return [(r[0], j) for r in sorted(RECORDINGS) for j in range(len(r[5]))]


# ---------------------------------------------------------------------------- the reference run
def _shim_torchaudio_load() -> None:
    import torch
    import torchaudio

    def load(path, *args, **kwargs):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), sr

    torchaudio.load = load


def _args(data_folder: Path, test_fold: str, n_cls: int) -> types.SimpleNamespace:
    """``main.parse_args`` defaults plus the flags of ``scripts/icbhi_patchmix_cl.sh``."""
    return types.SimpleNamespace(
        dataset="icbhi",
        data_folder=str(data_folder),
        class_split="lungsound",
        n_cls=n_cls,
        test_fold=test_fold,
        weighted_sampler=False,
        stetho_id=-1,
        sample_rate=SAMPLE_RATE,
        butterworth_filter=None,
        desired_length=8,
        nfft=1024,
        n_mels=N_MELS,
        concat_aug_scale=0,
        pad_types="repeat",
        resz=1,
        raw_augment=0,
        blank_region_clip=False,
        specaug_policy="icbhi_ast_sup",
        specaug_mask="mean",
        batch_size=2,
        num_workers=0,
        cls_list=["normal", "crackle", "wheeze", "both"] if n_cls == 4 else ["normal", "abnormal"],
    )


def _cycles_of(dataset) -> list[tuple[str, int]]:
    """``(recording, row)`` of each cycle of a reference dataset, in its order (``filenames`` come from a
    set)."""
    keys = []
    for f in dataset.filenames:
        keys += [(f, j) for j in range(len(dataset.filename_to_label[f]))]
    assert len(keys) == len(dataset.audio_data)
    return keys


def run_reference(ref: Path, work: Path) -> tuple[dict, dict]:
    sys.path.insert(0, str(ref))
    _shim_torchaudio_load()
    import torch
    from main import set_loader  # the reference's own loader construction

    corpus = write_corpus(work / "flat")
    data = work / "data"
    audio = data / "icbhi_dataset" / "audio_test_data"
    audio.mkdir(parents=True)
    for p in corpus.iterdir():
        if p.suffix in (".wav", ".txt") and p.name not in ("official_split.txt", "patient_list_foldwise.txt"):
            shutil.copy(p, audio / p.name)
    for name in ("official_split.txt", "patient_list_foldwise.txt"):
        shutil.copy(corpus / name, data / "icbhi_dataset" / name)
    shutil.copy(ref / "data" / "icbhi_dataset" / "metadata.txt", data / "icbhi_dataset" / "metadata.txt")

    keys = cycle_keys()
    waves = np.full((len(keys), len(WAVE_IDX)), np.nan, np.float32)
    fbanks = np.full((len(keys), len(FRAME_IDX), N_MELS), np.nan, np.float32)
    info = {"cycles": [{"recording": s, "row": j} for s, j in keys]}
    for fold in FOLDS:
        for n_cls in (4, 2):
            train_loader, val_loader, _ = set_loader(_args(data, fold, n_cls))
            for part, loader in (("train", train_loader), ("test", val_loader)):
                ds = loader.dataset
                for stem_row, label in zip(_cycles_of(ds), ds.labels):
                    c = info["cycles"][keys.index(stem_row)]
                    c.setdefault(f"split_{fold}", part)
                    assert c[f"split_{fold}"] == part
                    c.setdefault(f"label{n_cls}", int(label))
                    assert c[f"label{n_cls}"] == int(label)
                if fold != "official" or n_cls != 4:
                    continue
                if part == "test":  # exactly the evaluation batches
                    images = torch.cat([b[0] for b in loader])
                else:  # training images without the random SpecAugment: the evaluation transform
                    images = torch.stack([val_loader.dataset.transform(im[0][0]) for im in ds.audio_images])
                assert images.shape[1:] == (1, FRAMES, N_MELS), images.shape
                for k, stem_row in enumerate(_cycles_of(ds)):
                    i = keys.index(stem_row)
                    wave = ds.audio_data[k][0]
                    assert wave.shape == (1, TARGET), wave.shape
                    waves[i] = wave[0].numpy()[WAVE_IDX]
                    fbanks[i] = images[k, 0].numpy()[FRAME_IDX]
    assert not np.isnan(waves).any() and not np.isnan(fbanks).any()
    for c in info["cycles"]:  # a cycle not in a fold's split lists is in neither
        for fold in FOLDS:
            c.setdefault(f"split_{fold}", None)
    return {"wave": waves, "fbank": fbanks}, info


def run_score(ref: Path) -> dict:
    """The reference's ``main.validate`` (hits and counts per label, ``get_score``) on the score cases. The
    model and the classifier are identities that hand the case's logits on; ``get_score`` is wrapped to
    record its inputs and result; ``Tensor.cuda`` is a no-op (no GPU here)."""
    sys.path.insert(0, str(ref))
    import main as ref_main
    import torch
    from torch import nn

    torch.Tensor.cuda = lambda self, *a, **k: self
    calls = []
    get_score = ref_main.get_score

    def recording_get_score(hits, counts, *a, **k):
        out = get_score(hits, counts, *a, **k)
        calls.append((list(hits), list(counts), [float(v) for v in out]))
        return out

    ref_main.get_score = recording_get_score
    results = {}
    for name, (_, n, c, _, batch) in SCORE_CASES.items():
        logits, labels = score_inputs(name)
        loader = [
            (torch.from_numpy(logits[i : i + batch]), torch.from_numpy(labels[i : i + batch]), None)
            for i in range(0, n, batch)
        ]
        for two in (False, True) if c == 4 else (False,):
            args = types.SimpleNamespace(n_cls=c, two_cls_eval=two, print_freq=10**9)
            calls.clear()
            ref_main.validate(loader, nn.Identity(), nn.Identity(), [nn.CrossEntropyLoss()], args, [0, 0, 0])
            hits, counts, (sp, se, sc) = calls[-1]
            results[f"{name}{'_two_cls_eval' if two else ''}"] = {
                "case": name,
                "two_cls_eval": two,
                "hits": hits,
                "counts": counts,
                "sp": sp,
                "se": se,
                "score": sc,
            }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ref", required=True, type=Path, help="work tree of raymin0223/patch-mix_contrastive_learning"
    )
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        arrays, info = run_reference(a.ref.resolve(), Path(tmp))
    scores = run_score(a.ref.resolve())
    (a.out / "score.json").write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    for k, v in scores.items():
        print(k, v)
    info.update(
        wave_idx=WAVE_IDX.tolist(),
        frame_idx=FRAME_IDX.tolist(),
        sample_rate=SAMPLE_RATE,
        target=TARGET,
        frames=FRAMES,
    )
    np.savez_compressed(a.out / "outputs.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})
    (a.out / "cycles.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    for c in info["cycles"]:
        print(c)
    print({k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
