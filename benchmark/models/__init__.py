"""Models: the backbone registry, one module per backbone, and the autoencoder around a quantizer."""
