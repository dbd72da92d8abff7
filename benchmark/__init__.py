"""vqbench benchmark: data, models, training loop, metrics and the command line."""
