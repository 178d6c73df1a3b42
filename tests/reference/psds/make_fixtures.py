"""Reference SED metrics from psds_eval and sed_eval, for tests/metrics/test_detection_metrics.py.

Run in an environment holding the original packages (psds_eval 0.5.3 needs pandas < 3 and numpy < 2.4):

    python -m venv /work/venvs/psds
    /work/venvs/psds/bin/pip install psds_eval==0.5.3 "pandas<3" "numpy<2.4" sed_eval "setuptools<81"
    /work/venvs/psds/bin/python tests/reference/psds/make_fixtures.py tests/reference/psds/fixtures.json

It imports nothing of sed. Each case is deterministic synthetic data (seeded): files with overlapping events
of several classes, a file without events, events touching the file's ends, frame scores quantised to
1/40 so that the 41 thresholds (k - 0.5)/40, k = 0..40, are every operating point of the scores: psds_eval
given those is exact. A frame is active when its score is strictly above the threshold, as in
sed_scores_eval. Recorded per case: the inputs, PSDS1/PSDS2 (psds_eval, every operating point; PSDS1 also at
the DCASE baseline's 50 thresholds, np.linspace(0.01, 0.99, 50)), the intersection F1 at 0.5
(psds_eval compute_macro_f_score, dtc = gtc = 0.5), the collar F1 (sed_eval EventBasedMetrics, t_collar
0.2, percentage_of_length 0.2, optimal matching) and the segment F1 (sed_eval SegmentBasedMetrics, 1 s),
class-wise average (macro) and overall (micro).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

LEVELS = 40
PSDS = {1: dict(dtc=0.7, gtc=0.7, cttc=0.3, alpha_ct=0.0), 2: dict(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5)}


def make_case(seed: int, n_files: int, labels: list[str], hop: float, frames: int) -> dict:
    rng = np.random.default_rng(seed)
    gt, scores, durations = {}, {}, {}
    for i in range(n_files):
        key = f"file{i}"
        duration = round(frames * hop, 6)
        durations[key] = duration
        events = []
        if i != 1:  # file1 has no events
            for c, label in enumerate(labels):
                t = 0.0 if (i + c) % 3 == 0 else float(rng.uniform(0, 2))  # some events start at 0
                while t < duration - 0.3:
                    length = float(rng.uniform(0.3, 3.0))
                    end = min(duration, t + length)  # some end at the file's end
                    events.append((round(t, 3), round(end, 3), label))
                    t = end + float(rng.uniform(0.2, 4.0))
        gt[key] = sorted(events)
        base = np.full((frames, len(labels)), 0.1)
        centers = (np.arange(frames) + 0.5) * hop
        for on, off, label in events:  # found with boundary jitter, at an event's own level
            jitter = rng.normal(0, 0.1, 2)
            inside = (centers > on + jitter[0]) & (centers < off + jitter[1])
            base[inside, labels.index(label)] = rng.uniform(0.35, 0.95)
        for _ in range(3):  # false alarms: a blob of a random class
            on = rng.uniform(0, frames * hop)
            inside = (centers > on) & (centers < on + rng.uniform(0.3, 2.0))
            base[inside, rng.integers(len(labels))] = rng.uniform(0.3, 0.8)
        noisy = base + rng.normal(0, 0.03, base.shape)
        scores[key] = (np.clip(np.round(noisy * LEVELS), 0, LEVELS) / LEVELS).tolist()
    return {"labels": labels, "hop": hop, "durations": durations, "ground_truth": gt, "scores": scores}


def detections(case: dict, threshold: float) -> pd.DataFrame:
    rows = []
    hop = case["hop"]
    for key, probs in case["scores"].items():
        active = np.asarray(probs) > threshold
        for c, label in enumerate(case["labels"]):
            padded = np.concatenate([[False], active[:, c], [False]]).astype(int)
            starts = np.flatnonzero(np.diff(padded) == 1)
            ends = np.flatnonzero(np.diff(padded) == -1)
            for s, e in zip(starts, ends):
                rows.append((f"{key}.wav", round(s * hop, 6), round(e * hop, 6), label))
    return pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label"])


def tables(case: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    gt = pd.DataFrame(
        [(f"{k}.wav", on, off, lab) for k, evs in case["ground_truth"].items() for on, off, lab in evs],
        columns=["filename", "onset", "offset", "event_label"],
    )
    meta = pd.DataFrame(
        [(f"{k}.wav", d) for k, d in case["durations"].items()], columns=["filename", "duration"]
    )
    return gt, meta


def psds_eval_values(case: dict) -> dict:
    from psds_eval import PSDSEval

    gt, meta = tables(case)
    out = {}
    grids = {"": [(k - 0.5) / LEVELS for k in range(LEVELS + 1)], "_50": np.linspace(0.01, 0.99, 50)}
    for scenario, p in PSDS.items():
        for suffix, grid in grids.items():
            ev = PSDSEval(p["dtc"], p["gtc"], p["cttc"], ground_truth=gt, metadata=meta)
            for t in grid:
                ev.add_operating_point(detections(case, float(t)), info={"name": float(t), "threshold": t})
            out[f"psds{scenario}{suffix}"] = float(ev.psds(p["alpha_ct"], 1.0, 100.0).value)
    ev = PSDSEval(0.5, 0.5, 0.3, ground_truth=gt, metadata=meta)
    macro, per_class = ev.compute_macro_f_score(detections(case, 0.5))
    out["intersection_f1"] = float(macro)
    out["intersection_f1_classes"] = {k: float(v) for k, v in per_class.items()}
    return out


def sed_eval_values(case: dict) -> dict:
    import dcase_util
    import sed_eval

    gt, _ = tables(case)
    det = detections(case, 0.5)
    ref = dcase_util.containers.MetaDataContainer(gt.to_dict("records"))
    est = dcase_util.containers.MetaDataContainer(det.to_dict("records"))
    labels = case["labels"]
    ebm = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=labels, t_collar=0.2, percentage_of_length=0.2, event_matching_type="optimal"
    )
    sbm = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=1.0)
    for key, duration in case["durations"].items():
        r, e = ref.filter(filename=f"{key}.wav"), est.filter(filename=f"{key}.wav")
        ebm.evaluate(reference_event_list=r, estimated_event_list=e)
        sbm.evaluate(reference_event_list=r, estimated_event_list=e, evaluated_length_seconds=duration)
    out = {}
    for name, m in (("collar_f1", ebm), ("segment_f1", sbm)):
        out[name] = float(m.results_class_wise_average_metrics()["f_measure"]["f_measure"])
        out[f"{name}_micro"] = float(m.results_overall_metrics()["f_measure"]["f_measure"])
        cw = m.results_class_wise_metrics()
        out[f"{name}_classes"] = {c: float(cw[c]["f_measure"]["f_measure"]) for c in labels}
    return out


CASES = {
    "three_classes_hop_0.2": dict(seed=0, n_files=5, labels=["dog", "cat", "speech"], hop=0.2, frames=50),
    "four_classes_hop_0.064": dict(
        seed=1, n_files=4, labels=["Alarm", "Blender", "Dishes", "Speech"], hop=0.064, frames=125
    ),
}


def main(out: str) -> None:
    fixtures = {
        "versions": {p: md.version(p) for p in ("psds_eval", "sed_eval", "dcase_util", "pandas", "numpy")},
        "cases": {},
    }
    for name, spec in CASES.items():
        case = make_case(**spec)
        case["reference"] = {**psds_eval_values(case), **sed_eval_values(case)}
        fixtures["cases"][name] = case
        print(name, {k: v for k, v in case["reference"].items() if not k.endswith("classes")})
    with open(out, "w") as f:
        json.dump(fixtures, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
