"""Pretrained weights: resolve a source once (:mod:`.sources`), the family's importer maps its keys
(``ast``, ``beats``, ``ced``, ``efficientat``: a sniffer, ``arch_from`` and a key mapper each), and one
generic build owns the rest (:mod:`.build`). The families declare their public weights next to their
model files (:mod:`sed.models.family`)."""
