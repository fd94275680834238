"""The content-addressed store: objects, action packs, hashing, upkeep."""
