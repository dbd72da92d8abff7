"""vqbench sweeps: Ray Tune search spaces, presets, launching and resuming."""
