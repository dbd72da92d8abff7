"""Training: the trial config, the trainer loop, its schedule and the run record it writes."""
