"""Standard benchmark loaders (registered on import)."""
