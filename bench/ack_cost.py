"""What keeping finished outcomes in the slot costs, against acknowledging each job at once.

Drains N quick jobs in this process with one worker child's loop, twice: as the worker does
(outcomes written to the slot's shared buffer, acknowledged in batches) and acking every job
before the next (the other way to never lose a finished outcome). Also times the buffer write
alone. A rough figure, not a benchmark:

    DJANGO_SETTINGS_MODULE=tests.settings JOBQUEUE_TEST_DB_NAME=/tmp/ack_cost.sqlite3 \\
        python bench/ack_cost.py [N]
    (DATABASE=postgresql JOBQUEUE_TEST_DB_NAME=ack_cost for PostgreSQL; the database must exist)
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from jobqueue.brokers.base import Outcome  # noqa: E402
from jobqueue.brokers.database import DatabaseBroker  # noqa: E402
from jobqueue.consumer import Consumer  # noqa: E402
from jobqueue.message import Message  # noqa: E402
from jobqueue.models import Job  # noqa: E402
from jobqueue.slot import Slot, encode_outcome  # noqa: E402
from jobqueue.states import JobStatus  # noqa: E402
from tests.testapp.tasks import add  # noqa: E402


class AckEachJob(Consumer):
    def record(self, message: Message, outcome: Outcome) -> None:
        super().record(message, outcome)
        self.flush()


def drain(kind: type[Consumer], n: int) -> float:
    Job.objects.all().delete()
    add.map([(i, i) for i in range(n)])
    context = multiprocessing.get_context("fork")
    slot = Slot(context, 2 * 100 + 2)
    broker = DatabaseBroker()
    began = time.perf_counter()
    kind(broker, ["default"], "bench", slot, context.RawValue("b", 0), burst=True).run()
    elapsed = time.perf_counter() - began
    assert Job.objects.filter(status="succeeded").count() == n
    return elapsed / n * 1e6


def buffer_write(n: int) -> float:
    slot = Slot(multiprocessing.get_context("fork"), 4)
    now = timezone.now()
    m = Message(task="t", arguments="{}", queue="q", token=1)
    outcome = Outcome(m.id, JobStatus.SUCCEEDED, now, now, result="4", token=1)
    began = time.perf_counter()
    for _ in range(n):
        slot.claimed([m])
        slot.begin(m)
        slot.finished(m, encode_outcome(outcome))
        slot.acked()
    return (time.perf_counter() - began) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    call_command("migrate", verbosity=0)
    drain(Consumer, 200)  # warm up
    batched = min(drain(Consumer, n) for _ in range(3))
    each = min(drain(AckEachJob, n) for _ in range(3))
    print(f"slot bookkeeping per job (claim, begin, buffer, ack): {buffer_write(n):.1f} us")
    print(f"buffered, acked in batches: {batched:.0f} us per job")
    print(f"acked after every job:      {each:.0f} us per job ({each / batched:.2f}x)")


if __name__ == "__main__":
    main()
