"""Reference fixtures for Patch-Mix: the Patch-Mix repository's ``ASTModel.patch_mix`` and its Patch-Mix model.

Usage (the reference checkout is a plain work tree of raymin0223/patch-mix_contrastive_learning; the venv has
timm 0.4.5, which the reference's ``ASTModel`` asserts)::

    /work/venvs/patchmix-timm045/bin/python tests/reference/patchmix/generate.py --ref /work/refs/patchmix

Mixing: for each case of :data:`CASES` the patch tokens ``[B, N, D]`` (:func:`tokens`) and the labels
(:func:`labels`) are mixed by ``models.ast.ASTModel.patch_mix`` after ``np.random.seed(seed);
torch.manual_seed(seed)``. Its random choices are recorded as it makes them (``np.random.beta`` and
``torch.randperm`` are wrapped by recorders that return what they were given): ``lam`` drawn, the partner
permutation ``index``, the patch (or time-column) permutation whose first ``num_mask`` entries are mixed. Its
outputs are recorded too: the mixed tokens, ``y_a``, ``y_b``, the ``lam`` it returns (recomputed from
``num_mask``) and ``index`` (``cases.json``, ``outputs.npz``). ``patch_mix`` reads ``self.mix_beta`` (and, in
the time domain, ``self.square_patch``/``self.flatten_patch``) and no weight: it is called on an ``ASTModel``
made without running ``__init__`` (``ASTModel.__new__``, ``nn.Module.__init__``, ``mix_beta`` set).

Model (:func:`run_model`): a Patch-Mix AST of DeiT-tiny's recipe at width 64, depth 2 (:data:`MICRO`) is
filled from a manifest (``weights.json``), saved in the layout of the reference's ``util/misc.save_model``
(``best.pth``: ``args``, ``model``, ``optimizer``, ``epoch``, ``classifier``), loaded back by the reference's
``main.set_model`` with ``--pretrained --pretrained_ckpt`` (its ``--eval`` path), and run on the clips of
:func:`regimes` as its dataset prepares a cycle (``cut_pad_sample_torchaudio``, ``generate_fbank``, the
evaluation transform): the pooled embedding ``model(x)`` and the logits ``classifier(model(x))``, and the
Patch-Mix forward ``model(x, y, patch_mix=True)`` with its choices recorded.

Shims of the model stage (they change no number): ``nn.Module.cuda`` is a no-op (no GPU);
``timm.create_model`` builds timm 0.4.5's own DeiT-tiny-distilled recipe at width 64 / depth 2 / 2 heads and
``main.get_backbone_class`` gives ``ASTModel(model_size='tiny224')`` (a CPU-test size instead of base384);
``torch.load`` gets ``weights_only=False`` (the default the reference was written for; torch 2.6 changed
it, and the file pickles ``args``); the ImageNet and AudioSet initialisations are off for the load (they are
overwritten by the file, and need downloads).
"""  # noqa: E501 (the first line is the argparse description: kept whole)

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent

#: name -> (seed, B, N, D, mix_beta, time_domain, (f, t) grid of the N patches, number of classes)
CASES = {
    "icbhi_b4": (0, 4, 948, 2, 1.0, False, (12, 79), 4),  # the ICBHI grid (12 x 79), --mix_beta 1.0
    "icbhi_b8": (1, 8, 948, 2, 1.0, False, (12, 79), 4),  # --batch_size 8
    "beta0.4": (3, 3, 144, 3, 0.4, False, (12, 12), 4),  # U-shaped Beta
    "beta5": (4, 5, 144, 3, 5.0, False, (12, 12), 4),  # Beta peaked at 1/2
    "beta0": (5, 4, 144, 3, 0.0, False, (12, 12), 4),  # mix_beta 0: lam = 1, nothing mixed
    "time_b4": (2, 4, 948, 2, 1.0, True, (12, 79), 4),  # --time_domain: whole time columns
    "time_b6": (12, 6, 144, 3, 0.7, True, (12, 12), 2),
}


def tokens(name: str) -> np.ndarray:
    """The patch tokens of a case, float32 ``[B, N, D]`` (numpy PCG64: the same on every platform)."""
    seed, b, n, d = CASES[name][:4]
    return np.random.default_rng([seed, 17]).standard_normal((b, n, d)).astype(np.float32)


def labels(name: str) -> np.ndarray:
    """The labels of a case, int64 ``[B]``."""
    seed, b = CASES[name][:2]
    return np.random.default_rng([seed, 29]).integers(0, CASES[name][7], size=b).astype(np.int64)


class _Recorder:
    """For the duration of a ``with``: ``np.random.beta`` and ``torch.randperm`` record what they return
    (unchanged: the wrappers call the originals and hand their results back)."""

    def __init__(self, torch):
        self.torch, self.beta, self.randperm = torch, [], []

    def __enter__(self):
        self._beta, self._randperm = np.random.beta, self.torch.randperm

        def beta(*a, **k):
            v = self._beta(*a, **k)
            self.beta.append(float(v))
            return v

        def randperm(*a, **k):
            v = self._randperm(*a, **k)
            self.randperm.append(v.clone())
            return v

        np.random.beta, self.torch.randperm = beta, randperm
        return self

    def __exit__(self, *exc):
        np.random.beta, self.torch.randperm = self._beta, self._randperm


def run_reference(ref: Path) -> tuple[dict, dict]:
    sys.path.insert(0, str(ref))
    import torch
    from models.ast import ASTModel
    from torch import nn

    arrays, info = {}, {}
    for name, (seed, b, n, d, beta, time_domain, grid, _) in CASES.items():
        model = ASTModel.__new__(ASTModel)
        nn.Module.__init__(model)
        model.mix_beta = beta
        x, y = torch.from_numpy(tokens(name)), torch.from_numpy(labels(name))
        np.random.seed(seed)
        torch.manual_seed(seed)
        with _Recorder(torch) as drawn:
            mixed, y_a, y_b, lam, index = model.patch_mix(
                x.clone(), y, time_domain=time_domain, hw_num_patch=list(grid)
            )
        assert len(drawn.randperm) == 2 and len(drawn.beta) == (1 if beta > 0 else 0)
        lam_drawn = drawn.beta[0] if beta > 0 else 1.0
        width = grid[1] if time_domain else n
        num_mask = int(width * (1.0 - lam_drawn))
        assert torch.equal(drawn.randperm[0], index)
        info[name] = {
            "seed": seed,
            "batch": b,
            "patches": n,
            "dim": d,
            "mix_beta": beta,
            "time_domain": time_domain,
            "grid": list(grid),
            "lam_drawn": lam_drawn,
            "lam": float(lam),
            "num_mask": num_mask,
            "index": index.tolist(),
            "mask": drawn.randperm[1][:num_mask].tolist(),
            "mask_perm_len": int(drawn.randperm[1].numel()),
            "y": y.tolist(),
            "y_a": y_a.tolist(),
            "y_b": y_b.tolist(),
        }
        arrays[name] = mixed.numpy().astype(np.float32)
        print(name, {k: v for k, v in info[name].items() if k not in ("index", "mask", "y", "y_a", "y_b")})
    return arrays, info


# ---------------------------------------------------------------------------- the Patch-Mix model forward
#: the flags of scripts/icbhi_patchmix_cl.sh (the training run whose best.pth is the release file)
SCRIPT_FLAGS = [
    "--tag",
    "bs8_lr5e-5_ep50_seed1_best_param",
    "--dataset",
    "icbhi",
    "--seed",
    "1",
    "--class_split",
    "lungsound",
    "--n_cls",
    "4",
    "--epochs",
    "50",
    "--batch_size",
    "8",
    "--optimizer",
    "adam",
    "--learning_rate",
    "5e-5",
    "--weight_decay",
    "1e-6",
    "--cosine",
    "--model",
    "ast",
    "--test_fold",
    "official",
    "--pad_types",
    "repeat",
    "--resz",
    "1",
    "--n_mels",
    "128",
    "--ma_update",
    "--ma_beta",
    "0.5",
    "--from_sl_official",
    "--audioset_pretrained",
    "--method",
    "patchmix_cl",
    "--temperature",
    "0.06",
    "--proj_dim",
    "192",
    "--alpha",
    "1.0",
    "--mix_beta",
    "1.0",
]
#: what main.set_loader adds to args before training (h, w) and the class counts of the official train split
LOADER_ARGS = {"h": 798, "w": 128, "class_nums": [2063.0, 1215.0, 501.0, 363.0]}
MODEL_SEED = 2023
#: the ViT of the test model: DeiT-tiny's recipe (distilled, patch 16, LayerNorm eps 1e-6) at width 64,
#: depth 2
MICRO = {"embed_dim": 64, "depth": 2, "num_heads": 2}
SAMPLE_RATE, TARGET = 16000, 8 * 16000
#: the Patch-Mix forward on the same-length batch: labels, seeds of the mixing (patches, then time columns)
MIX_LABELS, MIX_SEEDS = [0, 2, 3], {"patches": 0, "time": 1}


def regimes() -> dict[str, list[tuple[float, int]]]:
    """Regime -> its clips (seconds, seed); ``batch`` runs as one batch, the others clip by clip."""
    from tests.reference import common

    out = {f"{s:g}s": [(s, 0)] for s in common.LENGTHS}
    out["batch"] = [(3.0, seed) for seed in (1, 2, 3)]
    out["mixed"] = list(zip(common.MIXED, (4, 5, 6)))
    return out


def model_manifest(state: dict, classifier: dict) -> list[dict]:
    """Key, shape and fill of every tensor of the checkpoint's ``model`` and ``classifier`` (the latter
    prefixed ``classifier.`` here)."""
    from tests.reference import common

    entries = []
    for prefix, sd in (("", state), ("classifier.", classifier)):
        for k, v in sd.items():
            name = k.rsplit(".", 1)[-1]
            if ".norm" in k or k.startswith(("mlp_head.0", "0.")) or "norm1" in k or "norm2" in k:
                entry = common.manifest_entry(
                    prefix + k,
                    v.shape,
                    mean=1.0 if name == "weight" else 0.0,
                    std=0.1 if name == "weight" else 0.02,
                )
            elif k in ("v.cls_token", "v.dist_token", "v.pos_embed"):
                entry = common.manifest_entry(prefix + k, v.shape, std=0.5)
            elif name == "bias":
                entry = common.manifest_entry(prefix + k, v.shape, std=0.02)
            else:  # linear and conv weights
                entry = common.manifest_entry(prefix + k, v.shape, std=0.05)
            entries.append(entry)
    return entries


def release_args(args_ns):
    """The ``args`` pickled into the release file: parse_args of the script's flags plus set_loader's
    fields."""
    for k, v in LOADER_ARGS.items():
        setattr(args_ns, k, np.asarray(v) if k == "class_nums" else v)
    return args_ns


def run_model(ref: Path, work: Path) -> tuple[dict, dict]:
    """The reference's Patch-Mix AST (``model_size='tiny224'``) loaded from a release-layout ``best.pth``."""
    import functools
    import os

    sys.path.insert(0, str(ref))
    import torch
    from torch import nn
    from torchvision import transforms

    from tests.reference import common

    cwd = os.getcwd()
    os.chdir(work)  # parse_args makes ./save/<model_name>
    try:
        import main as ref_main
        from models.ast import ASTModel
        from util.icbhi_util import cut_pad_sample_torchaudio, generate_fbank

        sys.argv = ["main.py", *SCRIPT_FLAGS]
        args = release_args(ref_main.parse_args())
    finally:
        os.chdir(cwd)
    import timm
    from timm.models.vision_transformer import _create_vision_transformer

    nn.Module.cuda = lambda self, *a, **k: self  # shim: no GPU here

    def micro_deit(name, pretrained=False, **kwargs):  # shim: timm's DeiT-tiny recipe at a CPU-test size
        assert name == "vit_deit_tiny_distilled_patch16_224" and not pretrained and not kwargs
        return _create_vision_transformer(name, pretrained=False, distilled=True, patch_size=16, **MICRO)

    timm.create_model = micro_deit
    tiny = functools.partial(ASTModel, model_size="tiny224", verbose=False)
    ref_main.get_backbone_class = lambda key: tiny  # shim: the DeiT-tiny size instead of base384

    # the release file: main.save_model's layout, tensors from the manifest
    shape_model = tiny(
        label_dim=4,
        input_fdim=798,
        input_tdim=128,
        imagenet_pretrain=False,
        audioset_pretrain=False,
        mix_beta=1.0,
    )
    entries = model_manifest(shape_model.state_dict(), shape_model.mlp_head.state_dict())
    tensors = common.tensors_from({"seed": MODEL_SEED, "tensors": entries})
    state = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}
    classifier = {k[len("classifier.") :]: v for k, v in tensors.items() if k.startswith("classifier.")}
    optimizer = torch.optim.Adam(list(shape_model.parameters()), lr=5e-5, weight_decay=1e-6)
    path = work / "best.pth"
    torch.save(
        {
            "args": args,
            "model": state,
            "optimizer": optimizer.state_dict(),
            "epoch": 23,
            "classifier": classifier,
        },
        path,
    )

    # loaded back the reference's way: main.set_model with --pretrained --pretrained_ckpt (its --eval run).
    # Its torch.load predates torch 2.6's weights_only default (shim: weights_only=False); the ImageNet and
    # AudioSet initialisations are skipped (they would be overwritten by the file, and need downloads).
    load_args = argparse.Namespace(**vars(args))
    load_args.pretrained, load_args.pretrained_ckpt = True, str(path)
    load_args.from_sl_official = load_args.audioset_pretrained = False
    torch_load = torch.load
    torch.load = functools.partial(torch_load, weights_only=False)
    try:
        model, clf, _, _, _ = ref_main.set_model(load_args)
    finally:
        torch.load = torch_load
    for k, v in model.state_dict().items():  # strict=False in the reference: check every tensor arrived
        assert torch.equal(v, state[k]), k
    for k, v in clf.state_dict().items():
        assert torch.equal(v, classifier[k]), k
    model.eval()
    clf.eval()

    # one clip as the reference's dataset makes a cycle the model sees: cut or repeat-pad to 8 s with the
    # fade-out, Kaldi fbank with the AudioSet statistics, then the evaluation transform of main.set_loader
    val_transform = transforms.Compose([transforms.ToTensor(), transforms.Resize(size=(798, 128))])

    def image(seconds: float, seed: int):
        audio = cut_pad_sample_torchaudio(torch.from_numpy(common.signal(seconds, SAMPLE_RATE, seed)), args)
        return val_transform(generate_fbank(audio, SAMPLE_RATE, n_mels=128))

    arrays = {}
    with torch.no_grad():
        for name, clips in regimes().items():
            batches = [[c] for c in clips] if name != "batch" else [clips]
            emb, logit = [], []
            for batch in batches:
                x = torch.stack([image(s, seed) for s, seed in batch])
                e = model(x)
                emb.append(e)
                logit.append(clf(e))
            arrays[f"model_embed_{name}"] = torch.cat(emb).numpy()
            arrays[f"model_logits_{name}"] = torch.cat(logit).numpy()
        info = {}
        x = torch.stack([image(s, seed) for s, seed in regimes()["batch"]])
        y = torch.tensor(MIX_LABELS)
        for domain, seed in MIX_SEEDS.items():
            np.random.seed(seed)
            torch.manual_seed(seed)
            with _Recorder(torch) as drawn:
                e, y_a, y_b, lam, index = model(x, y=y, patch_mix=True, time_domain=domain == "time")
            width = 79 if domain == "time" else 948
            num_mask = int(width * (1.0 - drawn.beta[0]))
            info[domain] = {
                "seed": seed,
                "lam_drawn": drawn.beta[0],
                "lam": float(lam),
                "index": index.tolist(),
                "mask": drawn.randperm[1][:num_mask].tolist(),
                "y_a": y_a.tolist(),
                "y_b": y_b.tolist(),
            }
            arrays[f"model_mix_{domain}_embed"] = e.numpy()
            arrays[f"model_mix_{domain}_logits"] = clf(e).numpy()
    for k, v in arrays.items():
        print(k, v.shape, float(v.min()), float(v.max()))
    args_json = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(args).items()}
    manifest = {
        "seed": MODEL_SEED,
        "tensors": entries,
        "args": args_json,
        "epoch": 23,
        "layout": "torch.save({'args': argparse.Namespace, 'model': ASTModel.state_dict(), 'optimizer': "
        "Adam.state_dict(), 'epoch': int, 'classifier': mlp_head-copy.state_dict()}) "
        "(util/misc.py save_model); manifest keys 'classifier.*' go to 'classifier'",
        "model_size": "tiny224",
        "vit": MICRO,
        "patch_mix": info,
    }
    return {k: v.astype(np.float32) for k, v in arrays.items()}, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ref", required=True, type=Path, help="work tree of raymin0223/patch-mix_contrastive_learning"
    )
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args()
    arrays, info = run_reference(a.ref.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        model_arrays, manifest = run_model(a.ref.resolve(), Path(tmp))
    np.savez_compressed(a.out / "outputs.npz", **arrays, **model_arrays)
    (a.out / "cases.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    (a.out / "weights.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
