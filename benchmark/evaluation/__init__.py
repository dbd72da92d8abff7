"""Evaluation: code usage and its ceilings, collapse probes, checkpoint evaluation, reconstruction quality, FID."""
