"""Lightning data modules (their contract and shared loaders: :mod:`.base`), the datasets they serve,
epoch-seeded samplers and the on-disk feature cache."""
