import math

import pytest
import torch

from sed.models import create_model
from sed.tasks.optim import build_optimizer, build_scheduler, epoch_factor, warmup_factor
from sed.tasks.transfer import apply_transfer


def test_ast_multistep_schedule():
    # AST ESC-50: MultiStepLR(range(5, 1000, 1), gamma=0.85) stepped per epoch
    f = [epoch_factor(e, "multistep", 25, start=5, step=1, gamma=0.85) for e in range(8)]
    assert f[:5] == [1.0] * 5 and f[5] == pytest.approx(0.85) and f[7] == pytest.approx(0.85**3)
    # AudioSet full: start 2, step 1, gamma 0.5
    assert epoch_factor(3, "multistep", 5, start=2, step=1, gamma=0.5) == pytest.approx(0.25)


def test_patchmix_cosine_schedule():
    lr, epochs = 5e-5, 50
    eta_min = lr * 0.1**3
    for e in (1, 10, 25, 50):
        expect = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2
        assert lr * epoch_factor(e - 1, "cosine", epochs, min_lr_ratio=1e-3) == pytest.approx(expect)


def test_ast_warmup_in_steps_of_50():
    assert warmup_factor(0, 1000) == 0.0 and warmup_factor(49, 1000) == 0.0
    assert warmup_factor(50, 1000) == pytest.approx(0.05) and warmup_factor(999, 1000) == pytest.approx(0.95)
    assert (
        warmup_factor(1000, 1000) == 1.0 and warmup_factor(1001, 1000) == 1.0 and warmup_factor(5, 0) == 1.0
    )


def test_scheduler_is_per_step_and_composes():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], "adam", lr=1.0)
    sched = build_scheduler(
        opt, "multistep", steps_per_epoch=40, max_epochs=10, warmup_steps=100, start=1, gamma=0.5
    )
    lrs = []
    for _ in range(130):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[49] == 0.0  # first 50-step warm-up quantum
    assert lrs[39] == 0.0 and lrs[50] == pytest.approx(0.5 * 0.5)  # warm-up 50/100 x epoch 1 (one milestone)
    assert lrs[100] == pytest.approx(0.25) and lrs[120] == pytest.approx(0.125)  # warm-up done; epoch 3
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler(opt, "poly", 1, 1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer([p], "lion")


def trainable(model):
    return {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def test_transfer_modes_on_ast():
    m = create_model("ast_micro", num_classes=3, input_tdim=100)
    apply_transfer(m, "head")
    assert trainable(m) == {"head"}
    apply_transfer(m, "last_n", 1)
    assert trainable(m) == {"head", "blocks.1", "norm"}
    apply_transfer(m, "all")
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match="finetune_blocks must be in 1..2"):
        apply_transfer(m, "last_n", 3)
    with pytest.raises(ValueError, match="unknown transfer mode"):
        apply_transfer(m, "partial")
