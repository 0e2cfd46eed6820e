"""The sender: sources, fragmenter, pacer, session (pure) and the app/CLI shell."""
