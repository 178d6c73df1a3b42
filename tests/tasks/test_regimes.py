"""One task class per training regime, each taking only the arguments it honours: a combination that
made no sense (semi-supervised Patch-Mix, a probe with optimiser options, SELD with mixup) is an error
naming the argument, in Python and on the command line."""

import inspect

import pytest

from sed.cli.main import main
from sed.tasks import (
    ClassificationTask,
    DistillationTask,
    PatchMixTask,
    ProbeTask,
    SELDTask,
    SemiSupervisedTask,
    Task,
)


@pytest.mark.parametrize(
    "cls, option",
    [
        (PatchMixTask, {"semi": "pseudo_label"}),  # was accepted and trained without the semi-supervised part
        (PatchMixTask, {"probe": "logistic"}),
        (ClassificationTask, {"semi": "mean_teacher"}),
        (ProbeTask, {"mixup": 0.5}),
        (ProbeTask, {"lr": 0.1}),
        (SELDTask, {"mixup": 0.5}),
        (SELDTask, {"transfer": "head"}),
    ],
)
def test_an_argument_the_regime_does_not_honour_is_an_error_naming_it(cls, option):
    name = next(iter(option))
    with pytest.raises(TypeError, match=f"'{name}'"):
        cls(model_name="cnn_tiny", num_classes=3, **option)


def test_a_probe_under_another_regime_points_to_the_probe_task():
    for cls in (ClassificationTask, PatchMixTask):
        with pytest.raises(ValueError, match="sed.tasks.ProbeTask"):
            cls(model_name="cnn_tiny", num_classes=3, transfer="probe")


def test_every_regime_is_a_task_with_its_own_arguments():
    def accepts(cls):
        names = set()
        for klass in cls.__mro__:
            if klass.__init__ is object.__init__ or not issubclass(klass, Task):
                continue
            params = inspect.signature(klass.__init__).parameters
            names |= {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"}
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break  # it does not forward the rest to its parent
        return names

    assert {"semi", "semi_weight", "ema_decay"} <= accepts(SemiSupervisedTask)
    assert not {"semi", "probe"} & accepts(ClassificationTask)
    assert not {"semi", "probe"} & (accepts(PatchMixTask) | accepts(DistillationTask))
    assert not {"lr", "optimizer", "mixup", "freqm", "transfer", "semi"} & accepts(ProbeTask)
    assert not {"mixup", "transfer", "semi", "probe", "label_smoothing"} & accepts(SELDTask)
    assert {"acs_p", "threshold", "lr"} <= accepts(SELDTask)


def test_fit_with_an_argument_of_another_regime_is_one_line(tiny_config, capsys):
    assert main(["fit", "--config", str(tiny_config()), "--model.init_args.semi=pseudo_label"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "semi" in err[0]
