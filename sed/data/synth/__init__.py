"""Deterministic synthetic corpora in the real layouts (:mod:`.corpora`) and the sounds they are made of
(:mod:`.signals`)."""
