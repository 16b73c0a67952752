"""Brokers with a fault built in, for tests of what a worker does when its own code fails."""

from jobqueue.brokers.database import DatabaseBroker


class BrokenTickBroker(DatabaseBroker):
    """A bookkeeping step that raises what no broker should (a bug, not an outage)."""

    def tick(self) -> None:
        raise RuntimeError("a bug in the supervisor's bookkeeping")
