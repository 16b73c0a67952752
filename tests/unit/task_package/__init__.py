"""A tasks package as a user writes one: ``__init__`` imports ``included``; ``orphan`` is
imported by nothing a worker loads (a view, say, imports it later)."""

from tests.unit.task_package import included  # noqa: F401
