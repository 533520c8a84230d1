"""The core both sides stand on: config, run store and events, paths, errors, the model spec.

Stdlib and light libraries only: the TUI imports this on its start path and the engine builds on it.
"""
