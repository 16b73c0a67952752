"""The test settings, with the schedule tests' tasks known to workers."""

from tests.settings import *  # noqa: F403
from tests.settings import JOBQUEUE

JOBQUEUE = {**JOBQUEUE, "TASK_MODULES": ["tests.integration.schedule_tasks"]}
