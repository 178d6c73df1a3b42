"""DCASE SELD metrics (spec seld.md 6): hand-built cases, an independent plain-loop re-implementation
of 6.1 / 6.2 on random data, the jackknife, and directory evaluation."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from sed.data.corpora.dcase_csv import SeldEvent, read_dcase_csv, write_dcase_csv
from sed.inference.seld import write_prediction_csv
from sed.metrics.seld import SELDMetrics2023, SELDMetrics2024
from sed.metrics.seld_eval import evaluate_dirs, format_results
from sed.models.accdoa import SeldDetection

E = SeldEvent
EPS = np.finfo(float).eps


def track(cls, frames, az, el=0.0, dist=None, src=0):
    return [E(f, cls, src, az, el, dist) for f in frames]


def score(pred, ref, nb_classes, average="macro", **kw):
    m = SELDMetrics2023(nb_classes, average=average, **kw)
    m.update(pred, ref)
    return m.compute(), m


# ----------------------------------------------------------------------------------- 2023, by hand


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_perfect_prediction(average):
    ref = (
        track(0, range(0, 30), 10, 20) + track(1, range(5, 25), -40) + track(1, range(8, 12), 100, -30, src=2)
    )
    r, _ = score(ref, ref, 2, average)
    assert r == pytest.approx({"ER": 0, "F": 1, "LE": 0, "LR": 1, "SELD": 0}, abs=1e-9)


def test_30_degree_error_is_a_spatial_false_positive():
    ref = track(0, range(0, 30), 0.0)
    r, m = score(track(0, range(0, 30), 30.0), ref, 1)
    # every 1-s block: one matched track 30 deg off -> FP_spatial, not TP; still localized (LR = 1)
    assert r["F"] == pytest.approx(0.0, abs=1e-9)
    assert r["LE"] == pytest.approx(30.0)
    assert r["LR"] == pytest.approx(1.0)
    assert r["ER"] == pytest.approx(1.0)  # one insertion per block, 3 blocks, Nref = 3
    assert r["SELD"] == pytest.approx((1 + 1 + 30 / 180 + 0) / 4)
    r10, _ = score(track(0, range(0, 30), 10.0), ref, 1)
    assert (r10["F"], r10["LE"], r10["ER"]) == pytest.approx((1.0, 10.0, 0.0))


def test_missing_class():
    ref = track(0, range(0, 30), 0.0) + track(1, range(0, 20), 90.0)
    r, m = score(track(0, range(0, 30), 0.0), ref, 2)
    cw = m.class_wise
    assert cw["F"] == pytest.approx([1.0, 0.0])
    assert cw["LE"] == pytest.approx([0.0, 180.0])  # LE = 180 for a class without DE_TP
    assert cw["LR"] == pytest.approx([1.0, 0.0])
    assert r["ER"] == pytest.approx(2 / 5)  # 2 deletions (class 1 in blocks 0, 1) over Nref = 3 + 2
    assert r["F"] == pytest.approx(0.5) and r["LE"] == pytest.approx(90.0) and r["LR"] == pytest.approx(0.5)


def test_extra_class():
    ref = track(0, range(0, 30), 0.0)
    r, m = score(ref + track(2, range(10, 15), 45.0), ref, 3)
    assert m.class_wise["F"] == pytest.approx([1.0, 0.0, 0.0])
    assert r["ER"] == pytest.approx(1 / 3)  # one insertion in block 1
    assert r["F"] == pytest.approx(1 / 3) and r["LR"] == pytest.approx(1 / 3)


def test_same_class_events_swapped_between_tracks():
    a, b = track(0, range(0, 20), 0.0, src=1), track(0, range(0, 20), 90.0, 30.0, src=2)
    ref = sorted(a + b, key=lambda e: (e.frame, e.track))
    pred = [e._replace(track=0) for e in sorted(a + b, key=lambda e: (e.frame, -e.track))]
    assert [p.azimuth for p in pred[:2]] == [90.0, 0.0]  # really swapped within each frame
    r, m = score(pred, ref, 1)
    assert r == pytest.approx({"ER": 0, "F": 1, "LE": 0, "LR": 1, "SELD": 0}, abs=1e-9)


def test_nb_ref_frames_quirk_ignores_late_predictions():
    ref = track(0, range(0, 10), 0.0) + track(1, range(10, 21), 60.0)  # last annotated frame = 20
    late = track(0, range(22, 28), 0.0) + track(1, range(20, 29), -120.0)
    r, _ = score(ref + late, ref, 2)
    assert r["F"] == pytest.approx(1.0) and r["ER"] == pytest.approx(0.0)
    # frame 20 itself is outside the ceil(20/10)*10 = 20 kept frames: dropping it changes nothing
    r, _ = score(track(0, range(0, 10), 0.0) + track(1, range(10, 20), 60.0), ref, 2)
    assert r["F"] == pytest.approx(1.0)
    # ... while the same extra events inside the scored range, or a longer explicit length, count
    m = SELDMetrics2023(2)
    m.update(ref + late, ref, nb_frames=30)
    assert m.compute()["F"] < 1.0
    r, _ = score(ref + track(0, range(12, 15), 0.0), ref, 2)
    assert r["F"] < 1.0


def test_fn_counts_prediction_tracks_when_no_frame_matches():
    ref = track(0, range(0, 5), 0.0) + track(0, range(20, 26), 0.0) + [E(12, 1, 0, 0.0, 0.0)]
    pred = track(0, range(5, 10), 0.0) + track(0, range(5, 10), 90.0) + track(0, range(20, 26), 0.0)
    r, m = score(pred, ref, 2)
    # block 0, class 0: in both, 2 predicted tracks but no common frame -> quirk: FN += np (= 2), not
    # ng (= 1); block 1: class 1 missed; block 2: class 0 found (TP = 1)
    assert r["ER"] == pytest.approx((2 + 1) / 3)
    assert m.class_wise["F"] == pytest.approx([1 / (1 + 0.5 * 2), 0.0])
    assert m.class_wise["LR"] == pytest.approx([1 / (1 + 2), 0.0])


def test_micro_and_macro_differ():
    ref = track(0, range(0, 50), 0.0) + track(1, range(0, 10), 90.0)
    pred = track(0, range(0, 50), 0.0) + track(1, range(0, 10), 150.0)
    ma, _ = score(pred, ref, 2, "macro")
    mi, _ = score(pred, ref, 2, "micro")
    assert ma["ER"] == pytest.approx(mi["ER"])  # ER is global in both
    assert ma["F"] == pytest.approx(0.5) and mi["F"] == pytest.approx(5 / 6)
    assert ma["LE"] == pytest.approx(30.0) and mi["LE"] == pytest.approx(60 / 6)


def test_accumulates_over_files_and_accepts_dicts_and_detections():
    ref1, ref2 = track(0, range(0, 20), 0.0), track(0, range(0, 20), 90.0)
    m = SELDMetrics2023(1)
    m.update({f: [e] for f, e in enumerate(ref1)}, ref1)
    m.update([SeldDetection(e.frame, 0, 0.0, 2.0, 0.0) for e in ref2], ref2)  # Cartesian (0, 2, 0) = 90 deg
    assert m.compute()["F"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="class index 3"):
        m.update([E(0, 3, 0, 0.0, 0.0)], ref1)


# ------------------------------------------------------------- independent re-implementation (6.1)


def gc(az1, el1, az2, el2):
    a1, e1, a2, e2 = (math.radians(v) for v in (az1, el1, az2, el2))
    d = math.sin(e1) * math.sin(e2) + math.cos(e1) * math.cos(e2) * math.cos(abs(a1 - a2))
    return math.degrees(math.acos(min(1.0, max(-1.0, d))))


def reference_2023(files, C, average, thr=20.0):
    """Spec 6.1 read literally: one loop per file, 1-s block, class and frame offset."""
    TP, FP, FPs, FN, Nref, DE, DETP, DEFN = ([0.0] * C for _ in range(8))
    subs = dels = ins = 0
    for pred, ref in files:
        n = max(e.frame for e in ref)
        for b in range(math.ceil(n / 10)):
            loc_fp = loc_fn = 0
            for c in range(C):

                def doas(evs, off, c=c, b=b):
                    return [(e.azimuth, e.elevation) for e in evs if e.cls == c and e.frame == 10 * b + off]

                g = {o: doas(ref, o) for o in range(10) if doas(ref, o)}
                p = {o: doas(pred, o) for o in range(10) if doas(pred, o)}
                ng = max((len(v) for v in g.values()), default=0)
                np_ = max((len(v) for v in p.values()), default=0)
                Nref[c] += ng
                if g and p:
                    dist = {}
                    for o in g:
                        if o in p:
                            cost = np.array([[gc(*r, *q) for q in p[o]] for r in g[o]])
                            for r, k in zip(*linear_sum_assignment(cost)):
                                dist.setdefault(r, []).append(cost[r, k])
                    if not dist:
                        FN[c] += np_
                        DEFN[c] += np_
                        loc_fn += np_
                        continue
                    for r in dist:
                        avg = sum(dist[r]) / len(dist[r])
                        DE[c] += avg
                        DETP[c] += 1
                        if avg <= thr:
                            TP[c] += 1
                        else:
                            FPs[c] += 1
                            loc_fp += 1
                    if np_ > ng:
                        FP[c] += np_ - ng
                        loc_fp += np_ - ng
                    if np_ < ng:
                        FN[c] += ng - np_
                        DEFN[c] += ng - np_
                        loc_fn += ng - np_
                elif g:
                    FN[c] += ng
                    DEFN[c] += ng
                    loc_fn += ng
                elif p:
                    FP[c] += np_
                    loc_fp += np_
            subs += min(loc_fp, loc_fn)
            dels += max(0, loc_fn - loc_fp)
            ins += max(0, loc_fp - loc_fn)
    er = (subs + dels + ins) / (sum(Nref) + EPS)

    def f_le_lr(tp, fps, fp, fn, de, detp, defn):
        f = tp / (EPS + tp + fps + 0.5 * (fp + fn))
        le = de / (detp + EPS) if detp else 180.0
        return f, le, detp / (EPS + detp + defn)

    if average == "micro":
        f, le, lr = f_le_lr(*(sum(x) for x in (TP, FPs, FP, FN, DE, DETP, DEFN)))
        return {"ER": er, "F": f, "LE": le, "LR": lr, "SELD": (er + 1 - f + le / 180 + 1 - lr) / 4}
    per = [f_le_lr(TP[c], FPs[c], FP[c], FN[c], DE[c], DETP[c], DEFN[c]) for c in range(C)]
    f, le, lr = (sum(x[i] for x in per) / C for i in range(3))
    seld = sum((er + 1 - x[0] + x[1] / 180 + 1 - x[2]) / 4 for x in per) / C
    return {"ER": er, "F": f, "LE": le, "LR": lr, "SELD": seld}


def random_file(rng: random.Random, C: int, with_dist=False):
    last = rng.choice([19, 20, 30, 37, 44, 59])
    ref = []
    for c in range(C):
        for src in range(rng.randint(0, 3)):
            start = rng.randint(0, last)
            az, el, d = rng.uniform(-180, 180), rng.uniform(-60, 60), rng.uniform(50, 500)
            for f in range(start, min(last, start + rng.randint(1, 25)) + 1):
                ref.append(E(f, c, src, az + rng.gauss(0, 2), el, d if with_dist else None))
    ref.append(E(last, rng.randrange(C), 9, 0.0, 0.0, 100.0 if with_dist else None))
    pred = []
    for e in ref:
        if rng.random() < 0.8:
            f = max(0, e.frame + rng.choice([0, 0, 0, 1, -1]))
            dist = e.distance / 100 * rng.uniform(0.3, 2.5) if with_dist else None
            pred.append(E(f, e.cls, 0, e.azimuth + rng.gauss(0, 15), e.elevation + rng.gauss(0, 5), dist))
    for _ in range(rng.randint(0, 15)):  # extras, some after the last reference frame
        pred.append(
            E(
                rng.randint(0, last + 8),
                rng.randrange(C),
                0,
                rng.uniform(-180, 180),
                rng.uniform(-60, 60),
                rng.uniform(0.5, 5) if with_dist else None,
            )
        )
    rng.shuffle(pred)
    pred.sort(key=lambda e: e.frame)  # shuffled order within a frame
    return pred, ref


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_2023_matches_independent_reimplementation(seed, average):
    rng = random.Random(seed)
    C = 4
    files = [random_file(rng, C) for _ in range(3)]
    m = SELDMetrics2023(C, average=average)
    for pred, ref in files:
        m.update(pred, ref)
    got, want = m.compute(), reference_2023(files, C, average)
    assert got == pytest.approx(want, abs=1e-9, rel=1e-9)


# -------------------------------------------------------------------------------- 2024 (6.2)


def reference_2024(files, C, average, thr=20.0, rel_thr=1.0):
    TP, FP, FPs, FN, DETP, DOA, DIS, REL = ([0.0] * C for _ in range(8))
    for pred, ref in files:
        n = max(e.frame for e in ref)
        for f in range(n):
            for c in range(C):
                g = [e for e in ref if e.frame == f and e.cls == c]
                p = [e for e in pred if e.frame == f and e.cls == c]
                if g and p:
                    cost = np.array(
                        [[gc(a.azimuth, a.elevation, b.azimuth, b.elevation) for b in p] for a in g]
                    )
                    rows, cols = linear_sum_assignment(cost)
                    for r, k in zip(rows, cols):
                        dr = g[r].distance / 100
                        de = abs(dr - p[k].distance)
                        DOA[c] += cost[r, k]
                        DIS[c] += de
                        REL[c] += de / (dr + EPS)
                        DETP[c] += 1
                        if cost[r, k] > thr or de / (dr + EPS) > rel_thr:
                            FPs[c] += 1
                        else:
                            TP[c] += 1
                    FP[c] += max(0, len(p) - len(g))
                    FN[c] += max(0, len(g) - len(p))
                else:
                    FN[c] += len(g)
                    FP[c] += len(p)

    def one(tp, fps, fp, fn, detp, doa, rel):
        f = tp / (EPS + tp + fps + 0.5 * (fp + fn))
        doae, rde = (doa / detp, rel / detp) if detp else (float("nan"), float("nan"))
        parts = [x for x in (1 - f, doae / 180, rde) if not math.isnan(x)]
        return f, doae, rde, sum(parts) / len(parts)

    if average == "micro":
        f, doae, rde, seld = one(*(sum(x) for x in (TP, FPs, FP, FN, DETP, DOA, REL)))
        return {"F": f, "DOAE": doae, "RDE": rde, "SELD": seld}
    per = [one(TP[c], FPs[c], FP[c], FN[c], DETP[c], DOA[c], REL[c]) for c in range(C)]
    return {
        "F": np.mean([x[0] for x in per]),
        "DOAE": np.nanmean([x[1] for x in per]),
        "RDE": np.nanmean([x[2] for x in per]),
        "SELD": np.mean([x[3] for x in per]),
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_2024_matches_independent_reimplementation(seed, average):
    rng = random.Random(100 + seed)
    C = 5  # some classes may get no match -> NaN DOAE / RDE handled by nanmean
    files = [random_file(rng, C, with_dist=True) for _ in range(3)]
    m = SELDMetrics2024(C, average=average)
    for pred, ref in files:
        m.update(pred, ref)
    got, want = m.compute(), reference_2024(files, C, average)
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-9, rel=1e-9, nan_ok=True)


def test_2024_distance_thresholds():
    ref = track(0, range(0, 11), 30.0, 10.0, dist=200.0)  # cm; last frame 10 -> frames 0..9 scored
    m = SELDMetrics2024(1)
    m.update(track(0, range(0, 11), 30.0, 10.0, dist=2.0), ref)
    assert m.compute() == pytest.approx(
        {"ER": 0, "F": 1, "DOAE": 0, "DistE": 0, "RDE": 0, "LR": 1, "SELD": 0}, abs=1e-9
    )
    m = SELDMetrics2024(1)
    m.update(track(0, range(0, 10), 30.0, 10.0, dist=2.5), ref)
    r = m.compute()
    assert (r["F"], r["DistE"], r["RDE"]) == pytest.approx((1.0, 0.5, 0.25))
    assert r["SELD"] == pytest.approx(0.25 / 3)
    m = SELDMetrics2024(1)  # relative error 1.5 > 1: a spatial false positive although the DOA is right
    m.update(track(0, range(0, 10), 30.0, 10.0, dist=5.0), ref)
    r = m.compute()
    assert (r["F"], r["DOAE"], r["RDE"], r["LR"]) == pytest.approx((0.0, 0.0, 1.5, 1.0), abs=1e-9)
    assert r["SELD"] == pytest.approx((1 + 0 + 1.5) / 3)
    m = SELDMetrics2024(1, ref_cm_to_m=False, reldist_threshold=float("inf"), dist_threshold=100.0)
    m.update(track(0, range(0, 10), 30.0, 10.0, dist=5.0), ref)
    assert m.compute()["DistE"] == pytest.approx(195.0) and m.compute()["F"] == pytest.approx(0.0)


def test_2024_nan_for_unmatched_class_and_missing_distance():
    ref = track(0, range(0, 11), 0.0, dist=100.0) + track(1, range(0, 5), 90.0, dist=100.0)
    m = SELDMetrics2024(2)
    m.update(track(0, range(0, 10), 40.0, dist=1.0), ref)
    cw = m.class_wise
    assert cw["DOAE"][0] == pytest.approx(40.0) and math.isnan(cw["DOAE"][1])
    r = m.compute()
    assert r["DOAE"] == pytest.approx(40.0)  # nanmean over classes
    assert r["SELD"] == pytest.approx(((1 + 40 / 180 + 0) / 3 + 1.0) / 2)
    with pytest.raises(ValueError, match="distance missing"):
        m.update(track(0, range(0, 10), 0.0), ref)


# ------------------------------------------------------------------------------------ jackknife


def test_jackknife_matches_leave_one_out_recomputation():
    rng = random.Random(7)
    files = [random_file(rng, 3) for _ in range(4)]
    m = SELDMetrics2023(3)
    for pred, ref in files:
        m.update(pred, ref)
    r = m.compute(jackknife=True)
    partial = []
    for i in range(4):
        mi = SELDMetrics2023(3)
        for j, (pred, ref) in enumerate(files):
            if j != i:
                mi.update(pred, ref)
        partial.append(mi.compute()["SELD"])
    jk = r["jackknife"]["SELD"]
    assert jk["bias"] == pytest.approx(3 * (np.mean(partial) - r["SELD"]))
    assert jk["estimate"] == pytest.approx(r["SELD"] - jk["bias"])
    lo, hi = jk["ci"]
    assert lo < jk["estimate"] < hi and hi - lo > 0
    assert set(r["jackknife"]) == {"ER", "F", "LE", "LR", "SELD"}
    text = format_results(r, 2023)
    assert "SELD" in text and "95% CI" in text and "[" in text
    with pytest.raises(ValueError):
        SELDMetrics2023(3).compute(jackknife=True)


# ------------------------------------------------------------------------------------- directories


def write_ref(path, events):
    write_dcase_csv(
        path, [(e.frame, e.cls, e.track, int(e.azimuth), int(e.elevation), int(e.distance)) for e in events]
    )


def test_evaluate_dirs_self_and_missing(tmp_path):
    a = track(0, range(0, 25), 30.0, 10.0, dist=150.0) + track(1, range(5, 15), -90.0, 0.0, dist=300.0)
    b = track(1, range(0, 18), 120.0, -20.0, dist=250.0)
    write_ref(tmp_path / "ref" / "dev-test-sony" / "a.csv", a)
    write_ref(tmp_path / "ref" / "dev-test-tau" / "b.csv", b)
    results, report = evaluate_dirs(tmp_path / "ref", tmp_path / "ref")
    # LE: the official arccos formula (kept for 2023) gives ~1e-7 deg for identical directions
    assert results == pytest.approx({"ER": 0, "F": 1, "LE": 0, "LR": 1, "SELD": 0}, abs=1e-6)
    assert report["nb_classes"] == 2 and report["missing_predictions"] == [] and report["n_evaluated"] == 2
    assert "F_20" in format_results(results, 2023)

    # predictions as system output (Cartesian), one file missing, one unmatched extra
    dets = [
        SeldDetection(e.frame, e.cls, *(np.array(_xyz(e.azimuth, e.elevation)) * 0.8), e.distance / 100)
        for e in a
    ]
    write_prediction_csv(tmp_path / "pred" / "sub" / "a.csv", dets, year=2024)
    write_prediction_csv(tmp_path / "pred" / "zzz.csv", dets, year=2024)
    results, report = evaluate_dirs(tmp_path / "pred", tmp_path / "ref")
    assert report["missing_predictions"] == ["b"] and report["unmatched_predictions"][0].endswith("zzz.csv")
    m = SELDMetrics2023(2)
    m.update(read_dcase_csv(tmp_path / "pred" / "sub" / "a.csv"), a)
    m.update([], b)  # missing prediction = empty prediction
    assert results == pytest.approx(m.compute())
    assert results["LR"] < 1.0
    jk, rep = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", jackknife=True)
    lo, hi = jk["jackknife"]["F"]["ci"]
    assert lo <= jk["jackknife"]["F"]["estimate"] <= hi
    json.dumps([jk, rep])  # the CLI's --json output
    r24, rep24 = evaluate_dirs(tmp_path / "pred", tmp_path / "ref", year=2024)
    assert rep24["class_wise"]["F"][0] == pytest.approx(1.0) and rep24["class_wise"]["RDE"][0] < 1e-3
    assert "DOAE" in format_results(r24, 2024)


def test_evaluate_dirs_starss_class_count_and_bad_file(tmp_path):
    write_ref(tmp_path / "ref" / "fold4_room2_mix001.csv", track(0, range(0, 12), 0.0, dist=100.0))
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "fold4_room2_mix001.csv").write_text("1,2\n")
    results, report = evaluate_dirs(tmp_path / "pred", tmp_path / "ref")
    assert report["nb_classes"] == 13 and report["nb_classes_source"] == "starss"
    assert report["n_evaluated"] == 0 and "fold4_room2_mix001.csv" in report["errors"][0]


def _xyz(az, el):
    a, e = math.radians(az), math.radians(el)
    return math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)
