"""Models: a timm-style registry plus one file per family (importing a family registers it).

``create_model("ast_base", num_classes=50, pretrained="ast-audioset-0.4593", input_tdim=512)``
"""

from sed.models import ast  # noqa: F401  (registers ast_base, ast_small, ast_tiny, ast_micro)
from sed.models.ast import ASTModel
from sed.models.registry import create_model, is_model, list_models, register_model

__all__ = ["ASTModel", "create_model", "is_model", "list_models", "register_model"]
