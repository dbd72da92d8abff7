"""The speed benchmark: per-configuration timing and memory against a reference implementation.
``bench`` is the ``vqbench bench`` command (flags, run); ``config`` the configurations; ``runner`` runs
each in its own child process; ``measure`` is what that child does; ``floor`` the matmul floor;
``machine`` the machine facts; ``report`` writes json/markdown/figure; ``reference`` the reference table."""
