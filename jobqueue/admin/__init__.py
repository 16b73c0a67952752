"""The admin: a read-only window on jobs and workers, with requeue and cancel as the only levers,
and the periodic schedules, which are edited here.

A job row belongs to its broker and its worker; an edit by hand would race with them, so nothing
is editable and every change goes through the broker. The job list stays fast on a million rows:
filters take their choices from settings and the registry (no ``DISTINCT`` scans), no full
``COUNT(*)`` runs (see ``jobqueue.paginator``), and the default order is an indexed column.
"""

from jobqueue.admin.jobs import JobAdmin
from jobqueue.admin.schedules import ScheduleAdmin, ScheduleForm
from jobqueue.admin.workers import WorkerAdmin

__all__ = ["JobAdmin", "ScheduleAdmin", "ScheduleForm", "WorkerAdmin"]
