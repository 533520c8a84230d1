"""The app's screens: setup, run, results and history (one module each, ids as named)."""
