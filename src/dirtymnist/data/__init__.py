"""Data: the generator, reading and caching a competition folder, folds (never imports torch)."""
