"""Brokers with a fault built in, for tests of what a worker does when its own code fails."""

from jobqueue.brokers.database import DatabaseBroker


class BrokenTickBroker(DatabaseBroker):
    """A bookkeeping step that raises what no broker should (a bug, not an outage)."""

    def tick(self) -> None:
        raise RuntimeError("a bug in the supervisor's bookkeeping")


class FlakyFinishBroker(DatabaseBroker):
    """Acknowledgements fail the first ``failures`` times (a connection cut mid-ack); every
    call is logged in ``calls`` so a test sees what the worker did next."""

    def __init__(self, failures: int = 2) -> None:
        super().__init__()
        self.failures = failures
        self.calls: list[str] = []

    def claim(self, queues, worker, limit):  # type: ignore[no-untyped-def]
        self.calls.append("claim")
        return super().claim(queues, worker, limit)

    def finish(self, worker, outcomes):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            self.calls.append("finish-failed")
            from django.db import OperationalError

            raise OperationalError("server closed the connection unexpectedly")
        self.calls.append("finish")
        return super().finish(worker, outcomes)
