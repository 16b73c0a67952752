"""One module per library under benchmark: its app with the same no-op task, and an adapter the
driver (bench.driver) uses to enqueue, count what is left, and start its worker.

Each module is imported only inside its own virtual environment (bench/.venvs/<env>)."""
