"""Multi-ACCDOA post-processing (spec seld.md 5): threshold, 15-degree unify, CSV output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sed.data.corpora.dcase_csv import read_dcase_csv
from sed.inference.seld import write_prediction_csv
from sed.models.accdoa import SeldDetection, multi_accdoa_to_detections, unify_tracks


def vec(az, el=0.0, norm=1.0):
    a, e = math.radians(az), math.radians(el)
    return [norm * math.cos(e) * math.cos(a), norm * math.cos(e) * math.sin(a), norm * math.sin(e)]


def pack(frames, C, tracks, axes=3):
    """Flat multi-ACCDOA output; ``tracks[(frame, class)] = [v0, v1, v2]`` (None = zero vector)."""
    out = np.zeros((frames, 3 * axes * C))
    for (f, c), vs in tracks.items():
        for t, v in enumerate(vs):
            for a, x in enumerate(v or [0.0] * axes):
                out[f, t * axes * C + a * C + c] = x
    return out


def rows(dets):
    return [(d.frame, d.cls, d.x, d.y, d.z, d.distance) for d in dets]


def assert_rows(got, want, tol=1e-12):
    got, want = np.array(got, dtype=float).reshape(-1, 6), np.array(want, dtype=float).reshape(-1, 6)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[:, :2], want[:, :2])
    np.testing.assert_allclose(got[:, 2:], want[:, 2:], atol=tol, rtol=0)


def test_activity_threshold_on_vector_norm():
    out = pack(2, 2, {(0, 1): [vec(0, norm=0.49), None, None], (1, 0): [None, vec(30, norm=0.51), None]})
    dets = multi_accdoa_to_detections(out, 2)
    assert [(d.frame, d.cls) for d in dets] == [(1, 0)]
    assert (dets[0].x, dets[0].y) == pytest.approx(vec(30, norm=0.51)[:2])


def test_no_close_pair_outputs_every_active_track():
    v0, v1, v2 = vec(0), vec(90, norm=0.7), vec(-120, 30)
    dets = multi_accdoa_to_detections(pack(1, 1, {(0, 0): [v0, v1, v2]}), 1)
    assert_rows(rows(dets), [(0, 0, *v0, 0.0), (0, 0, *v1, 0.0), (0, 0, *v2, 0.0)])
    dets = multi_accdoa_to_detections(
        pack(1, 1, {(0, 0): [v0, vec(5, norm=0.3), v2]}), 1
    )  # close but inactive
    assert_rows(rows(dets), [(0, 0, *v0, 0.0), (0, 0, *v2, 0.0)])


@pytest.mark.parametrize("pair,third", [((0, 1), 2), ((1, 2), 0), ((2, 0), 1)])
def test_one_close_pair_is_merged_into_its_raw_mean(pair, third):
    vs = [None] * 3
    vs[pair[0]], vs[pair[1]], vs[third] = (
        vec(40, 10, 0.6),
        vec(50, 12, 0.9),
        vec(-100, 0, 0.8),
    )  # ~10 deg apart
    mean = list((np.array(vs[pair[0]]) + np.array(vs[pair[1]])) / 2)
    dets = multi_accdoa_to_detections(pack(1, 1, {(0, 0): vs}), 1)
    assert_rows(rows(dets), [(0, 0, *vs[third], 0.0), (0, 0, *mean, 0.0)])  # third first, then mean
    vs[third] = vec(-100, 0, 0.2)  # inactive third track: only the mean
    assert_rows(rows(multi_accdoa_to_detections(pack(1, 1, {(0, 0): vs}), 1)), [(0, 0, *mean, 0.0)])


def test_two_or_more_close_pairs_give_one_mean_of_three():
    chain = [vec(0), vec(12, norm=0.8), vec(24, norm=0.6)]  # 0~1 and 1~2 close, 0-2 = 24 deg apart
    for vs in (chain, [vec(0), vec(5), vec(10)]):
        dets = multi_accdoa_to_detections(pack(1, 1, {(0, 0): vs}), 1)
        assert_rows(rows(dets), [(0, 0, *np.mean(np.array(vs), axis=0), 0.0)])


def test_unify_threshold_is_15_degrees():
    for sep, n in ((14.9, 1), (15.1, 2)):
        dets = multi_accdoa_to_detections(pack(1, 1, {(0, 0): [vec(0), vec(sep), None]}), 1)
        assert len(dets) == n
    assert (
        len(multi_accdoa_to_detections(pack(1, 1, {(0, 0): [vec(0), vec(20), None]}), 1, unify_threshold=25))
        == 1
    )


def test_distance_averaged_and_negative_distance_clipped_before_unify():
    out = pack(
        1,
        2,
        {(0, 0): [vec(0) + [-1.0], vec(5) + [3.0], None], (0, 1): [vec(90) + [-2.0], None, None]},
        axes=4,
    )
    dets = multi_accdoa_to_detections(out, 2)
    assert [(d.cls, d.distance) for d in dets] == [(0, pytest.approx(1.5)), (1, 0.0)]


def plain_reference(out, C, axes):
    """Spec 5 as straightforward loops over frames, classes and tracks."""
    res = []
    for f in range(out.shape[0]):
        for c in range(C):
            tr = [out[f, [t * axes * C + a * C + c for a in range(axes)]].copy() for t in range(3)]
            if axes == 4:
                for v in tr:
                    v[3] = max(v[3], 0.0)
            act = [np.linalg.norm(v[:3]) > 0.5 for v in tr]

            def close(i, j, tr=tr, act=act):
                u, w = tr[i][:3] / np.linalg.norm(tr[i][:3]), tr[j][:3] / np.linalg.norm(tr[j][:3])
                return act[i] and act[j] and math.degrees(math.acos(min(1, max(-1, u @ w)))) < 15

            flags = [close(0, 1), close(1, 2), close(2, 0)]
            if sum(flags) == 0:
                keep = [tr[t] for t in range(3) if act[t]]
            elif sum(flags) == 1:
                i, j, k = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][flags.index(True)]
                keep = ([tr[k]] if act[k] else []) + [(tr[i] + tr[j]) / 2]
            else:
                keep = [(tr[0] + tr[1] + tr[2]) / 3]
            res += [(f, c, *v[:3], v[3] if axes == 4 else 0.0) for v in keep]
    return res


@pytest.mark.parametrize("axes", [3, 4])
def test_vectorised_decoder_matches_plain_loops(axes):
    rng = np.random.default_rng(axes)
    T, C = 40, 13
    base = rng.normal(size=(T, 1, 3, C)) * 0.6
    parts = [base + rng.normal(size=(T, 1, 3, C)) * s for s in (0.05, 0.1, 0.7)]
    if axes == 4:
        parts = [np.concatenate([p, rng.normal(1.0, 1.5, size=(T, 1, 1, C))], axis=2) for p in parts]
    out = np.concatenate(parts, axis=1).reshape(T, -1)
    want = plain_reference(out, C, axes)
    got = rows(multi_accdoa_to_detections(torch.from_numpy(out).float(), C))  # torch input works too
    assert len(got) == len(want) > 100
    assert_rows(got, want, tol=1e-6)
    cand, valid = unify_tracks(out.reshape(T, 3, axes, C).transpose(0, 3, 1, 2))
    assert valid.sum() == len(want)
    n_out = valid.sum(-1)
    assert {0, 1, 2, 3} <= set(n_out.ravel().tolist())  # all unify outcomes occurred


def test_shape_errors():
    with pytest.raises(ValueError):
        multi_accdoa_to_detections(np.zeros((5, 100)), 13)
    with pytest.raises(ValueError):
        multi_accdoa_to_detections(np.zeros((2, 5, 117)), 13)


def test_csv_round_trip_2023(tmp_path):
    dets = [
        SeldDetection(3, 1, *vec(45, 20, 0.8)),
        SeldDetection(3, 4, *vec(-170, -10, 0.6), 2.5),
        SeldDetection(12, 0, *vec(90, 0, 1.2)),
    ]
    path = tmp_path / "out" / "fold4_room2_mix001.csv"
    write_prediction_csv(path, dets, year=2023)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split(",")) == 7 for line in lines)
    assert lines[0].startswith("3,1,0,") and lines[0].endswith(",0") and lines[1].endswith(",0")
    back = read_dcase_csv(path)
    for d, e in zip(dets, back):
        want = d.to_event()
        assert (e.frame, e.cls, e.track, e.distance) == (d.frame, d.cls, 0, 0.0)
        assert (e.azimuth, e.elevation) == pytest.approx((want.azimuth, want.elevation), abs=1e-4)
    assert (back[0].azimuth, back[0].elevation) == pytest.approx((45, 20), abs=1e-4)


def test_csv_2024_writes_distance_clipped_at_zero(tmp_path):
    path = tmp_path / "p.csv"
    write_prediction_csv(path, [SeldDetection(0, 2, *vec(10), 3.25), (1, 2, *vec(20), -0.7)], year=2024)
    back = read_dcase_csv(path)
    assert [e.distance for e in back] == [3.25, 0.0]
    with pytest.raises(ValueError):
        write_prediction_csv(path, [], year=2021)
