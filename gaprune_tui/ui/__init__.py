"""The terminal UI (Textual): app, screens, widgets, themes. Never imports the engine or the ML stack."""
