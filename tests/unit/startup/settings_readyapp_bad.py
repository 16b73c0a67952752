"""Started with a JOBQUEUE that cannot be used (QUEUES a string), then fixed in-process."""

from tests.unit.startup.settings_readyapp import *  # noqa: F403
from tests.unit.startup.settings_readyapp import JOBQUEUE

JOBQUEUE = {**JOBQUEUE, "QUEUES": "default"}
