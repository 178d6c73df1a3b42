"""Reference fixtures for Patch-Mix: the Patch-Mix repository's own ``ASTModel.patch_mix`` on given tokens.

Usage (the reference checkout is a plain work tree of raymin0223/patch-mix_contrastive_learning)::

    /work/venvs/patchmix/bin/python tests/reference/patchmix/generate.py --ref /work/refs/patchmix

For each case of :data:`CASES` the patch tokens ``[B, N, D]`` (:func:`tokens`) and the labels (:func:`labels`)
are mixed by ``models.ast.ASTModel.patch_mix`` after ``np.random.seed(seed); torch.manual_seed(seed)``.
Its random choices are recorded as it makes them (``np.random.beta`` and ``torch.randperm`` are wrapped by
recorders that return what they were given): ``lam`` drawn, the partner permutation ``index``, the patch (or
time-column) permutation whose first ``num_mask`` entries are mixed. Its outputs are recorded too: the mixed
tokens, ``y_a``, ``y_b``, the ``lam`` it returns (recomputed from ``num_mask``) and ``index``.

``patch_mix`` is a method of the reference's ``ASTModel``; it reads ``self.mix_beta`` (and, in the time
domain, ``self.square_patch``/``self.flatten_patch``) and no weight. It is called on an ``ASTModel`` made
without running ``__init__`` (which builds a timm 0.4.5 ViT and asserts that version): ``ASTModel.__new__``,
``nn.Module.__init__``, ``mix_beta`` set as ``__init__`` sets it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent

#: name -> (seed, B, N, D, mix_beta, time_domain, (f, t) grid of the N patches, number of classes)
CASES = {
    "icbhi_b4": (0, 4, 948, 2, 1.0, False, (12, 79), 4),     # the ICBHI grid (12 x 79), --mix_beta 1.0
    "icbhi_b8": (1, 8, 948, 2, 1.0, False, (12, 79), 4),     # --batch_size 8
    "beta0.4": (3, 3, 144, 3, 0.4, False, (12, 12), 4),      # U-shaped Beta
    "beta5": (4, 5, 144, 3, 5.0, False, (12, 12), 4),        # Beta peaked at 1/2
    "beta0": (5, 4, 144, 3, 0.0, False, (12, 12), 4),        # mix_beta 0: lam = 1, nothing mixed
    "time_b4": (2, 4, 948, 2, 1.0, True, (12, 79), 4),       # --time_domain: whole time columns
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
            mixed, y_a, y_b, lam, index = model.patch_mix(x.clone(), y, time_domain=time_domain, hw_num_patch=list(grid))
        assert len(drawn.randperm) == 2 and len(drawn.beta) == (1 if beta > 0 else 0)
        lam_drawn = drawn.beta[0] if beta > 0 else 1.0
        width = grid[1] if time_domain else n
        num_mask = int(width * (1.0 - lam_drawn))
        assert torch.equal(drawn.randperm[0], index)
        info[name] = {"seed": seed, "batch": b, "patches": n, "dim": d, "mix_beta": beta, "time_domain": time_domain,
                      "grid": list(grid), "lam_drawn": lam_drawn, "lam": float(lam), "num_mask": num_mask,
                      "index": index.tolist(), "mask": drawn.randperm[1][:num_mask].tolist(),
                      "mask_perm_len": int(drawn.randperm[1].numel()), "y": y.tolist(), "y_a": y_a.tolist(),
                      "y_b": y_b.tolist()}
        arrays[name] = mixed.numpy().astype(np.float32)
        print(name, {k: v for k, v in info[name].items() if k not in ("index", "mask", "y", "y_a", "y_b")})
    return arrays, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, type=Path, help="work tree of raymin0223/patch-mix_contrastive_learning")
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args()
    arrays, info = run_reference(a.ref.resolve())
    np.savez_compressed(a.out / "outputs.npz", **arrays)
    (a.out / "cases.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
