"""Readers of corpus layouts and their metadata: ESC-50, ICBHI 2017, STARSS23, AudioSet labels, DCASE CSVs,
folders and manifests, and the bounded text/CSV reading they share."""
