"""Settings for the test suite: ``DATABASE=sqlite`` (default) or ``DATABASE=postgresql``.

Worker subprocesses started by the tests use these settings too; ``JOBQUEUE_TEST_DB_NAME`` points
them at the test database the test run created.
"""

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobqueue",
    "tests.testapp",
    "demo_project.shootr",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
# Django's tasks framework (django.tasks on 6.x, the django-tasks backport on 5.2) on jobqueue.
if importlib.util.find_spec("django.tasks") or importlib.util.find_spec("django_tasks"):
    if not importlib.util.find_spec("django.tasks"):
        INSTALLED_APPS.append("django_tasks")
    INSTALLED_APPS.append("tests.tasksapp")
    TASKS = {
        "default": {"BACKEND": "jobqueue.backend.JobQueueBackend"},
        "retrying": {
            "BACKEND": "jobqueue.backend.JobQueueBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"MAX_RETRIES": 2, "RETRY_BACKOFF": 0},
        },
        "immediate": {  # not jobqueue's: for tests of tasks declared on another backend
            "BACKEND": (
                "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"
            )
            + ".backends.immediate.ImmediateBackend"
        },
    }

# The tests' users need no costly hashing (PBKDF2 takes about 0.3 s of CPU a password).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

STATIC_URL = "static/"
MEDIA_URL = "media/"
MEDIA_ROOT = os.environ.get("SHOOTR_MEDIA_ROOT", str(BASE_DIR / ".pytest_cache" / "media"))

_engine = os.environ.get("DATABASE", "sqlite")
_test_db = os.environ.get("JOBQUEUE_TEST_DB_NAME")
_run = os.environ.get("JOBQUEUE_TEST_RUN", "default")
if _engine == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _test_db or "test",
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": f"test_jobqueue_{_run}"},
        }
    }
else:
    _dir = Path(os.environ.get("JOBQUEUE_TEST_DIR", BASE_DIR / ".pytest_cache"))
    _dir.mkdir(parents=True, exist_ok=True)
    _file = _dir / f"test-{_run}.sqlite3"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _test_db or str(_file),
            # A file, not memory: worker subprocesses must see the same database.
            "TEST": {"NAME": str(_file)},
        }
    }

JOBQUEUE = {
    "QUEUES": ["high", "default", "low"],
    "LEASE_TIMEOUT": float(os.environ.get("JOBQUEUE_LEASE_TIMEOUT", "30")),
    "POLL_INTERVAL": 0.05,
    "TASK_MODULES": ["tests.testapp.worker_tasks"],
}

if os.environ.get("JOBQUEUE_TEST_BROKER"):  # a broker class of the tests' own
    JOBQUEUE["BROKER"] = {"BACKEND": os.environ["JOBQUEUE_TEST_BROKER"]}

if os.environ.get("JOBQUEUE_TEST_REDIS_URL"):
    JOBQUEUE["BROKER"] = {
        "BACKEND": "jobqueue.brokers.redis.RedisBroker",
        "OPTIONS": {
            "url": os.environ["JOBQUEUE_TEST_REDIS_URL"],
            "prefix": os.environ.get("JOBQUEUE_TEST_REDIS_PREFIX", "jobqueue"),
        },
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "INFO"}},
}
