"""Django settings for jobqueue under benchmark, chosen by environment variables:

BENCH_BROKER   redis | database
BENCH_DB       postgresql | sqlite   (the Job table; the queue itself with the database broker)
BENCH_TRACKING 1 | 0                 (JOBQUEUE["TRACKING"], the Redis broker's Job table rows)
BENCH_FRAMEWORK 1 | 0                (Django's tasks framework: TASKS through JobQueueBackend)
BENCH_JQ_POLL  seconds               (JOBQUEUE["POLL_INTERVAL"]; unset: jobqueue's default)
BENCH_REDIS_URL, BENCH_PG_NAME, BENCH_SQLITE_PATH  set by the harness.
"""

import os

SECRET_KEY = "bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["jobqueue", "bench.jqapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("BENCH_DB", "postgresql") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "bench_jobqueue"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/bench_jobqueue.sqlite3"),
        }
    }

if os.environ.get("BENCH_BROKER", "redis") == "redis":
    BROKER = {
        "BACKEND": "jobqueue.brokers.redis.RedisBroker",
        "OPTIONS": {"url": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")},
    }
else:
    BROKER = {"BACKEND": "jobqueue.brokers.database.DatabaseBroker"}

# jobqueue's default settings but the broker and tracking: the targets are about the defaults.
JOBQUEUE = {"BROKER": BROKER, "TRACKING": os.environ.get("BENCH_TRACKING", "1") == "1"}
if os.environ.get("BENCH_JQ_POLL"):
    JOBQUEUE["POLL_INTERVAL"] = float(os.environ["BENCH_JQ_POLL"])

if os.environ.get("BENCH_FRAMEWORK") == "1":
    import django

    if django.VERSION < (6, 0):
        INSTALLED_APPS.append("django_tasks")  # the backport's app
    TASKS = {"default": {"BACKEND": "jobqueue.backend.JobQueueBackend"}}
    JOBQUEUE["TASK_MODULES"] = ["bench.jqapp.ftasks"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
