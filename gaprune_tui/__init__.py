"""gaprune-tui: prune whole decoder layers of an LLM with a genetic algorithm."""

__version__ = "0.1.0"
