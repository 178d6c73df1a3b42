import pytest
import yaml

from sed.data.synth.corpora import make_esc50


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """3 classes x 10 clips of 1 s at 16 kHz in 5 folds (2 clips per class and fold)."""
    root = tmp_path_factory.mktemp("esc")
    make_esc50(root, seed=0, num_classes=3, clips_per_class=10, duration=1.0, sample_rate=16000)
    return root


def write_config(folder, corpus, **over):
    """A LightningCLI config: cnn_tiny (1-s input) on the tiny corpus, fold 5 held out, run in folder/run."""
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(folder / "run"),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
        "model": {
            "class_path": "sed.tasks.ClassificationTask",
            "init_args": {
                "model_name": "cnn_tiny",
                "model_kwargs": {"clip_seconds": 1.0},
                "lr": 0.003,
                "optimizer": "adamw",
            },
        },
        "data": {
            "class_path": "sed.data.modules.audio.AudioDataModule",
            "init_args": {
                "source": "esc50",
                "root": str(corpus),
                "clip_seconds": 1.0,
                "batch_size": 6,
                "val_folds": [5],
                "test_folds": [5],
                "cache_audio": True,
            },
        },
    }
    for key, value in over.items():
        section, name = key.split("__", 1)
        target = cfg[section]["init_args"] if section in ("model", "data") else cfg[section]
        target[name] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_config(tiny_corpus, tmp_path):
    return lambda **over: write_config(tmp_path, tiny_corpus, **over)
