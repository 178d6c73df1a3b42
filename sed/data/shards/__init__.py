"""WebDataset shards: :mod:`.writer` packs a corpus, :mod:`.members` checks each member, :mod:`.reader`
streams them."""
