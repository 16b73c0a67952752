"""Django settings for jobqueue under benchmark, chosen by environment variables:

BENCH_BROKER   redis | database
BENCH_DB       postgresql | sqlite   (the Job table; the queue itself with the database broker)
BENCH_TRACKING 1 | 0                 (JOBQUEUE["TRACKING"], the Redis broker's Job table rows)
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

# An idle worker on SQLite polls; 0.05 s, like django-tasks-db's db_worker --interval here.
JOBQUEUE = {
    "BROKER": BROKER,
    "POLL_INTERVAL": float(os.environ.get("BENCH_JQ_POLL", "0.05")),
    "TRACKING": os.environ.get("BENCH_TRACKING", "1") == "1",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
