"""The speed benchmark: per-configuration timing and memory against a reference implementation."""
