"""Data: what a clip is, where corpora come from, and how batches reach a model.

Bottom to top (each layer imports only those below it; tests/test_layout.py checks it):

- :mod:`sed.data.clips`: the clip record (``ClipItem``), the clip dataset and its cropping/collation;
- :mod:`sed.data.corpora`: readers of corpus layouts and their metadata (ESC-50, ICBHI 2017, STARSS23,
  AudioSet labels, DCASE CSVs, folders and manifests);
- :mod:`sed.data.synth.corpora`: small synthetic corpora in the real layouts (tests, demos, benchmarks);
- :mod:`sed.data.shards.reader`: WebDataset shards (writing, member checks, streaming);
- :mod:`sed.data.modules`: the Lightning data modules (one contract:
  :class:`sed.data.modules.base.SedDataModule`), their datasets, samplers and the feature cache.

Importing :mod:`sed.data` imports nothing heavy.
"""
