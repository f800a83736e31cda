"""Data stage: download, checksum, preprocess (extract, validate, cache), split, the bundled sample."""
