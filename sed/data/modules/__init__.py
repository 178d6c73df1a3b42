"""Lightning data modules, the datasets they serve, epoch-seeded samplers and the
on-disk feature cache."""
