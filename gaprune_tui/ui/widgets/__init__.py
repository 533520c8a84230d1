"""Widgets with their own rendering, one per module (layer bitmap, generation table, charts)."""
