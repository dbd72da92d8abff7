"""One module per image source behind ``benchmark.data.load_dataset``, plus the shared disk cache and
image helpers. Import through ``benchmark.data``; these modules are loaded only when a source is used."""
