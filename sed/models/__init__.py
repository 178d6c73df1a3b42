"""Models: a timm-style registry plus one file per family (importing a family registers it).

``create_model("ast_base", num_classes=50, pretrained="ast-audioset-0.4593", input_tdim=512)``
"""

# importing a family registers its models: ast_base/small/tiny/micro; cnn_tiny/small/base (compact
# students); resnet_conformer[_tiny] and seldnet_baseline (SELD)
from sed.models import ast, cnn, resnet_conformer, seldnet  # noqa: F401
from sed.models.ast import ASTModel
from sed.models.registry import create_model, is_model, list_models, register_model

__all__ = ["ASTModel", "create_model", "is_model", "list_models", "register_model"]
