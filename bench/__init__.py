"""Herald's benchmark suite: `python -m bench` measures the raw limit and Herald against it, in one run."""
