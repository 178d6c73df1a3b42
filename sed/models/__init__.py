"""Models: a timm-style registry plus one file per family (importing a family registers it).

``create_model("ast_base", num_classes=50, pretrained="ast-audioset-0.4593", input_tdim=512)``;
``load_model(source)`` builds a model from any source (a sed checkpoint or a foreign format).
"""

# the families: each model file registers its sizes and declares its family (sed.models.family: length
# policy, the importer of its release files, its public weights): ast_base/small/tiny/micro;
# cnn_tiny/small/base
# (compact students); tcn_tiny/small/base (causal, streaming); resnet_conformer[_tiny] and seldnet_baseline
# (SELD); prototype_classifier (few-shot classes on any clip model's embedding); beats_iter3/micro (BEATs);
# ced_tiny/mini/small/base (CED); efficientat_mn04..mn40 (EfficientAT MobileNets); crnn_dcase2024 (the DCASE
# 2024 Task 4 baseline CRNN, a frame model); clap_htsat_tiny/base (LAION-CLAP's audio tower, zero-shot
# classes by text). `sedkit models` lists them.
from sed.models import (  # noqa: F401
    ast,
    beats,
    causal,
    ced,
    clap,
    cnn,
    crnn,
    efficientat,
    prototype,
    resnet_conformer,
    seldnet,
)
from sed.models.ast import ASTModel
from sed.models.loading import build_from_description, load_model
from sed.models.registry import create_model, is_model, list_models, register_model

__all__ = [
    "ASTModel",
    "build_from_description",
    "create_model",
    "is_model",
    "list_models",
    "load_model",
    "register_model",
]
