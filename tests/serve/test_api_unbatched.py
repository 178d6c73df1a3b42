"""`--max-batch-size 1`: LitServe's unbatched loop calls `predict` with one decoded request, not a list."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("litserve")


def test_one_request_is_scored_as_in_a_batch(tmp_path):
    import torch

    from sed import save_model
    from sed.models import create_model
    from sed.serve.api import SedAPI

    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_model(ckpt, create_model("cnn_tiny", num_classes=3), labels=["a", "b", "c"])
    api = SedAPI({"checkpoints": [str(ckpt)], "device": "cpu"}, max_seconds=60, max_batch_size=1)
    api.setup("cpu")
    t = np.arange(16000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV")
    upload = {"name": "tone.wav", "data": buf.getvalue(), "params": {"top_k": 2}}

    item = api.decode_request(upload)
    assert item["path"].is_file()  # the upload, in a private temporary file until its batch is done
    one = api.predict(item)  # what LitServe does at --max-batch-size 1
    assert not item["path"].exists()
    (batched,) = api.predict([api.decode_request(upload)])
    assert one.pop("_batch")[1:] == [1, 1] and batched.pop("_batch")[1:] == [2, 1]
    assert "error" not in one and one == batched
    assert [r["label"] for r in one["body"]] == [r["label"] for r in batched["body"]]
    assert len(one["body"]) == 2
