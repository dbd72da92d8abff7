"""Data: the dataset type, the source registry, one module per source, the disk cache and sampling."""
