"""Importers of foreign checkpoint formats, one file per source (DeiT, original AST, Hugging Face);
:mod:`sed.models.pretrained.ast` resolves any of them into an AST and is the registry's
``pretrained=`` hook for the AST sizes."""
