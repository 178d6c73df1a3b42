"""Models: a timm-style registry plus one file per family (importing a family registers it).

``create_model("ast_base", num_classes=50, pretrained="ast-audioset-0.4593", input_tdim=512)``;
``load_model(source)`` builds a model from any source (a sed checkpoint or a foreign format).
"""

# importing a family registers its models: ast_base/small/tiny/micro; cnn_tiny/small/base (compact
# students); tcn_tiny/small/base (causal, streaming); resnet_conformer[_tiny] and seldnet_baseline (SELD);
# the AST importers attach pretrained=
from sed.models import ast, causal, cnn, resnet_conformer, seldnet  # noqa: F401
from sed.models.ast import ASTModel
from sed.models.loading import build_from_description, load_model
from sed.models.pretrained import ast as _ast_pretrained  # noqa: F401
from sed.models.registry import create_model, is_model, list_models, register_model

__all__ = ["ASTModel", "build_from_description", "create_model", "is_model", "list_models", "load_model",
           "register_model"]
