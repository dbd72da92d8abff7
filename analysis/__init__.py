"""vqbench analysis: MLflow runs -> pandas -> seaborn figures and scipy statistics."""
