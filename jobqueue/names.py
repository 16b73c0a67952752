"""What a task, queue or worker name may hold, so that every broker and column can carry it.

A Redis message is one string whose fields are separated by ``|`` (split on by Python and by
the Lua scripts alike), a worker's queues are stored joined by ``,``, and names appear as
``key=value`` words in logs and as words on the ``jobworker`` command line: none of these
characters, no whitespace and no control character may appear in a name. Nor may an invisible
format character (a zero-width space, a right-to-left override: two names that look alike
would differ) or a lone surrogate (no database or UTF-8 encoder stores it). Each name must also
fit the column that stores it (the limits below are those of ``jobqueue.models``).
"""

from __future__ import annotations

import re
import unicodedata

TASK_NAME_MAX = 200  # Job.task, Worker.current_task
QUEUE_NAME_MAX = 100  # Job.queue
WORKER_NAME_MAX = 200  # Worker.name, Job.worker: each process is named "<name>/<n>"
QUEUES_MAX = 1000  # Worker.queues: the queues a worker serves, joined by ","

FORBIDDEN = re.compile(r"[|,\s\x00-\x1f\x7f-\x9f]")
RULE = "no '|', ',', whitespace, control or invisible format character, or lone surrogate"
UNSEEN = {"Cf": "an invisible format character", "Cs": "a lone surrogate"}


def problem(kind: str, value: object, max_length: int) -> str | None:
    """Why ``value`` cannot be a ``kind`` name (for an error message), or None if it can."""
    if not isinstance(value, str) or not value:
        return f"{kind} must be a non-empty string, not {value!r}"
    if len(value) > max_length:
        return (
            f"{kind} {value[:40]!r}... is {len(value)} characters long; at most {max_length} "
            "fit in the Job table"
        )
    found = FORBIDDEN.search(value)
    if found:
        return f"{kind} {value!r} holds {found.group()!r}; a name may hold {RULE}"
    if not value.isascii():
        for char in value:
            what = UNSEEN.get(unicodedata.category(char))
            if what:
                return f"{kind} {value!r} holds {char!r}, {what}; a name may hold {RULE}"
    return None


def worker_name_problem(name: object, concurrency: int) -> str | None:
    """Why ``name`` cannot name a worker of ``concurrency`` processes, or None. Each process
    is recorded as ``<name>/<n>``, so the suffix counts against the column."""
    limit = WORKER_NAME_MAX - len(f"/{max(concurrency, 1)}")
    found = problem("the worker name (--name)", name, limit)
    if found and isinstance(name, str) and len(name) > limit:
        found += f" (its processes are named '<name>/1' to '<name>/{concurrency}')"
    return found
