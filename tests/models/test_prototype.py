"""The prototype classifier: cosine vs Euclidean decisions, the open-set answer, self-contained
checkpoints."""

import pytest
import torch

from sed.checkpoint import save_model
from sed.models import create_model, load_model
from sed.models.prototype import PrototypeHead, build_prototype_classifier, prototype_logits


def test_cosine_and_euclidean_decide_differently_on_hand_made_embeddings():
    # class A points along x (far out), class B along the diagonal (close to the origin)
    protos = torch.tensor([[10.0, 0.0], [1.0, 1.0]])
    q = torch.tensor([[2.0, 0.3]])  # nearer B by distance, nearer A by angle
    cos = prototype_logits(q, protos, "cosine", scale=1.0)
    euc = prototype_logits(q, protos, "euclidean")
    assert cos.argmax().item() == 0 and euc.argmax().item() == 1
    assert torch.allclose(cos, torch.tensor([[2 / (4.09**0.5), 2.3 / ((4.09**0.5) * 2**0.5)]]), atol=1e-6)
    assert torch.allclose(euc, torch.tensor([[-(64 + 0.09), -(1 + 0.49)]]), atol=1e-5)


def test_open_set_answers_unknown_below_the_threshold():
    head = PrototypeHead(2, 2, "cosine", scale=10.0, open_set=0.8)
    head.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    logits = head(torch.tensor([[1.0, 0.1], [1.0, 1.0]]))  # cos 0.995 to A; 0.707 to both
    assert logits.shape == (2, 3)
    assert logits.argmax(-1).tolist() == [0, 2] and logits[0, 2].item() == pytest.approx(8.0)
    euc = PrototypeHead(1, 2, "euclidean", open_set=4.0)
    assert euc(torch.tensor([[1.0, 1.0], [3.0, 0.0]])).argmax(-1).tolist() == [0, 1]  # d² 2 < 4; 9 > 4


def test_prototype_checkpoint_is_self_contained(tmp_path):
    torch.manual_seed(0)
    backbone = create_model("cnn_tiny", num_classes=3, clip_seconds=1.0).eval()
    protos = torch.randn(2, backbone.embed_dim)
    model = build_prototype_classifier(backbone, protos, ["dog", "cat"], metric="euclidean", open_set=50.0)
    assert model.labels == ["dog", "cat", "unknown"] and model.num_classes == 3
    path = save_model(tmp_path / "p.pt", model)
    again, desc = load_model(path)
    assert desc["model_name"] == "prototype_classifier" and desc["labels"] == ["dog", "cat", "unknown"]
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(again(wave), model(wave))
        assert torch.allclose(again.embed(wave), backbone.embed(wave))
    assert torch.equal(again.prototypes, protos)


def test_bad_prototype_arguments_are_refused():
    backbone = create_model("cnn_tiny", num_classes=3, clip_seconds=1.0)
    with pytest.raises(ValueError, match="do not match"):
        build_prototype_classifier(backbone, torch.zeros(3, backbone.embed_dim), ["a", "b"])
    with pytest.raises(ValueError, match="open-set answer"):
        build_prototype_classifier(backbone, torch.zeros(1, backbone.embed_dim), ["unknown"], open_set=0.5)
    with pytest.raises(ValueError, match="metric"):
        prototype_logits(torch.zeros(1, 2), torch.zeros(1, 2), "manhattan")
