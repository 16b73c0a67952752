"""A tasks package whose ``__init__`` imports nothing: ``billing`` is imported by the app's
ready(), which runs in every process (workers included)."""
