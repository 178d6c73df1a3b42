"""The detection task's loss composition on hand-made batches: masking, source slicing, the consistency
weight's ramp, the teacher's update, mixup within one source, the learning-rate schedule, bf16."""

from __future__ import annotations

import math

import pytest
import torch

from sed.data.events import batch_frame_targets
from sed.losses.detection import consistency_loss, masked_bce, strong_loss, weak_loss
from sed.tasks.detection import DetectionTask, lr_factor, mix_within
from tests.tasks.detection_helpers import fake_create_model, make_batch, one_thread  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def task(monkeypatch):
    monkeypatch.setattr("sed.models.create_model", fake_create_model)
    torch.manual_seed(0)
    return DetectionTask(model_name="tiny", num_classes=3, labels=["a", "b", "c"], warmup_epochs=5)


EVENTS = [[(0.1, 0.4, 0), (0.5, 0.9, 2)], [(0.2, 0.6, 1)], [(0.0, 0.5, 2)]]


def _bce(p, y):
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def test_strong_and_weak_terms_by_hand(task):
    batch = make_batch(EVENTS, [0, 1, 2])
    batch["class_mask"][0, 1] = False  # the strong clip's source does not annotate class b
    terms = task.losses(batch, step=0, mix=False)
    frames, clip = task.model.forward_frames(batch["wave"], batch["lengths"])
    y = batch_frame_targets(batch["events"], frames.shape[1], task.model.frame_hop, 3)
    keep = [0, 2]  # classes of clip 0 that count
    expected_strong = _bce(frames[0][:, keep], y[0][:, keep]).mean()
    expected_weak = _bce(clip[1], batch["weak"][1]).mean()
    assert terms["strong"].item() == pytest.approx(expected_strong.item(), rel=1e-5)
    assert terms["weak"].item() == pytest.approx(expected_weak.item(), rel=1e-5)
    # the teacher starts as the student: no consistency yet, the total is the supervised sum
    assert terms["consistency"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["loss"].item() == pytest.approx((expected_strong + expected_weak).item(), rel=1e-5)


def test_sources_are_sliced_and_masked_classes_ignored(task):
    batch = make_batch(EVENTS, [0, 1, 2])
    base = task.losses(batch, step=0, mix=False)
    other = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    other["weak"][0] = 1 - other["weak"][0]  # a strong clip's clip labels: no weak term reads them
    other["weak"][2] = 1.0  # an unlabelled clip's: none either
    other["events"][1, 0] = torch.tensor([0.0, 1.0, 0.0])  # a weak clip's events: no strong term
    same = task.losses(other, step=0, mix=False)
    assert same["strong"].item() == pytest.approx(base["strong"].item(), rel=1e-6)
    assert same["weak"].item() == pytest.approx(base["weak"].item(), rel=1e-6)
    masked = {**batch, "class_mask": batch["class_mask"].clone(), "events": batch["events"].clone()}
    masked["class_mask"][0, 2] = False
    moved = {**masked, "events": masked["events"].clone()}
    moved["events"][0, 1] = torch.tensor([0.0, 1.0, 2.0])  # class c's event changed, class c masked
    assert task.losses(masked, 0, mix=False)["strong"].item() == pytest.approx(
        task.losses(moved, 0, mix=False)["strong"].item(), rel=1e-6
    )
    assert task.losses(masked, 0, mix=False)["strong"].item() != pytest.approx(base["strong"].item())


def test_no_strong_or_weak_clips_give_zero_terms(task):
    terms = task.losses(make_batch(EVENTS, [2, 2, 2]), step=0, mix=False)
    assert terms["strong"].item() == 0.0 and terms["weak"].item() == 0.0
    assert terms["loss"].requires_grad


def test_consistency_weight_ramps_up_over_the_warmup_epochs(task):
    task.steps_per_epoch = 10  # warm-up: 5 epochs = 50 steps
    assert task.consistency_weight(0) == pytest.approx(2 * math.exp(-5 * (1 - 1 / 50) ** 2))
    assert task.consistency_weight(24) == pytest.approx(2 * math.exp(-5 * 0.5**2))
    assert task.consistency_weight(49) == pytest.approx(2.0)
    assert task.consistency_weight(500) == pytest.approx(2.0)
    batch = make_batch(EVENTS, [0, 1, 2])
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    terms = task.losses(batch, step=24, mix=False)
    sf, sc = task.model.forward_frames(batch["wave"], batch["lengths"])
    tf, tc = task.teacher.model.forward_frames(batch["wave"], batch["lengths"])
    expected = ((sf - tf) ** 2).mean() + ((sc - tc) ** 2).mean()  # over the whole batch, all sources
    assert terms["consistency"].item() == pytest.approx(expected.item(), rel=1e-5)
    total = terms["strong"] + terms["weak"] + 2 * math.exp(-1.25) * expected
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_teacher_is_the_moving_average_of_the_student(task, monkeypatch):
    before = [p.clone() for p in task.teacher.model.parameters()]
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(DetectionTask, "global_step", property(lambda self: 9))  # decay min(0.999, 0.9)
    task.on_train_batch_end(None, None, 0)
    for t, b, s in zip(task.teacher.model.parameters(), before, task.model.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    assert not any(p.requires_grad for p in task.teacher.parameters())
    assert all(id(p) not in {id(q) for q in task.teacher.parameters()} for p in task.model.parameters())


def test_mixup_stays_within_one_source():
    torch.manual_seed(3)
    wave = torch.randn(6, 40)
    lengths = torch.tensor([40, 30, 20, 40, 40, 40])
    frames = torch.rand(6, 5, 3).round()
    weak = torch.rand(6, 3).round()
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[1, 2] = False
    w0, f0, k0 = wave.clone(), frames.clone(), weak.clone()
    rows = torch.tensor([0, 1, 2])
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    lam = mix_within(rows, wave, lengths, frames, weak, mask, 0.2, "soft", gen)
    other = rows[perm]
    torch.testing.assert_close(wave[:3], lam * w0[:3] + (1 - lam) * w0[other])
    torch.testing.assert_close(frames[:3], (lam * f0[:3] + (1 - lam) * f0[other]).clamp(0, 1))
    torch.testing.assert_close(weak[:3], (k0[:3] + k0[other]).clamp(0, 1))
    torch.testing.assert_close(wave[3:], w0[3:])  # the other source untouched
    torch.testing.assert_close(frames[3:], f0[3:])
    assert (
        lengths[:3].tolist()
        == torch.maximum(torch.tensor([40, 30, 20]), torch.tensor([40, 30, 20])[perm]).tolist()
    )
    assert 0.0 < lam < 1.0
    assert (mask[:3, 2] == ~(other == 1) & ~(rows == 1)).all()


def test_hard_mixup_takes_the_union():
    frames = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    wave, weak = torch.zeros(2, 4), torch.zeros(2, 2)
    seed = next(
        s for s in range(100) if torch.randperm(2, generator=torch.Generator().manual_seed(s))[0] == 1
    )
    ones = torch.ones(2, 2, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)  # a permutation that swaps the two clips
    mix_within(torch.tensor([0, 1]), wave, torch.tensor([4, 4]), frames, weak, ones, 0.2, "hard", g)
    assert frames.tolist() == [[[1.0, 1.0]], [[1.0, 1.0]]]


def test_lr_schedule_is_the_baselines_exponential_warmup():
    assert lr_factor(1, 100, 200, 300, 1e-5) == pytest.approx(math.exp(-5 * 0.99**2))
    assert lr_factor(50, 100, 200, 300, 1e-5) == pytest.approx(math.exp(-1.25))
    assert lr_factor(150, 100, 200, 300, 1e-5) == 1.0
    assert lr_factor(250, 100, 200, 300, 1e-5) == pytest.approx(math.cos(math.pi / 4))
    assert lr_factor(300, 100, 200, 300, 1e-5) == pytest.approx(1e-5)  # cos(pi/2) = 0: the floor
    assert lr_factor(1000, 100, None, 300, 1e-5) == 1.0  # no decay


def test_losses_are_float32_under_bf16_autocast(task):
    p = torch.tensor([[0.0, 1.0, 0.3]], dtype=torch.bfloat16)
    y = torch.tensor([[0.0, 1.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = masked_bce(p, y)
        terms = task.losses(make_batch(EVENTS, [0, 1, 2]), 0, mix=False)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(-math.log(0.30078125) / 3, rel=1e-4)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    assert strong_loss(p[None], y[None], torch.tensor([[False, False, True]])).item() == pytest.approx(
        -math.log(0.30078125), rel=1e-4
    )
    assert weak_loss(p, y, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0
    assert consistency_loss(p[None], p[None].float(), p, p).item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": "clip"}, "clip gives no frame outputs"),
        ({"mixup": "loud"}, "mixup must be soft, hard or null"),
        ({"objective": "auc"}, "objective must be one of intersection, psds1, collar"),
        ({"median_filter": [0.1, 0.2]}, "median_filter has 2 entries for 3 classes"),
    ],
)
def test_configuration_mistakes_are_one_line(monkeypatch, kwargs, message):
    monkeypatch.setattr("sed.models.create_model", fake_create_model)
    with pytest.raises(ValueError, match=message):
        DetectionTask(**{"model_name": "tiny", "num_classes": 3, **kwargs})


def test_batch_frame_targets_equal_the_per_clip_encoder():
    from sed.data.events import events_to_frames, pad_events

    rows = [
        [(0.0, 0.5, 1), (0.3, 0.31, 1), (1.9, 5.0, 0)],  # overlapping events of one class, one past the end
        [],
        [(0.064, 0.128, 2), (0.0641, 0.0642, 0), (2.0, 2.5, 1)],  # frame edges, a sliver, one after the end
    ]
    events = pad_events(rows)  # float32, as a batch carries them
    got = batch_frame_targets(events, 31, 0.064, 3)
    want = torch.stack(
        [events_to_frames([e for e in clip.tolist() if e[2] >= 0], 31, 0.064, 3) for clip in events]
    )
    assert torch.equal(got, want) and got[0, :8, 1].sum() == 8 and got[2, 1, 2] == 1
