"""lm-eval task YAMLs bundled with gaprune-tui: offline copies of built-in tasks (see core/tasknames.py)."""
