"""Settings of the demo site: SQLite and the database broker by default, Redis on request.

Secrets and deployment choices come from the environment, never from this file.
"""

import contextlib
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-set-DJANGO_SECRET_KEY")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
# Private, loopback and link-local addresses Shootr may photograph anyway: none unless asked for,
# whatever DEBUG says. "1" for all of them (development only), or a list of address:port pairs,
# e.g. "127.0.0.1:8000" for the demo's own pages.
SHOOTR_ALLOW_PRIVATE_HOSTS = os.environ.get("SHOOTR_ALLOW_PRIVATE_HOSTS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobqueue",
    "demo_project.shootr",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "demo_project.wsgi.application"

if os.environ.get("DATABASE_ENGINE", "sqlite") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("DATABASE_NAME", "jobqueue_demo"),
            "USER": os.environ.get("DATABASE_USER", "postgres"),
            "PASSWORD": os.environ.get("DATABASE_PASSWORD", ""),
            "HOST": os.environ.get("DATABASE_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DATABASE_PORT", "5432"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DATABASE_NAME", str(DATA_DIR / "demo.sqlite3")),
        }
    }
    # SQLite creates the file, not its directory: without this, `migrate` in a fresh clone fails
    # with "unable to open database file". Where it cannot be created (a read-only system in
    # production), the database's own error says so.
    with contextlib.suppress(OSError):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

JOBQUEUE = {"QUEUES": ["high", "default", "low"]}
if os.environ.get("JOBQUEUE_BROKER") == "redis":
    JOBQUEUE["BROKER"] = {
        "BACKEND": "jobqueue.brokers.redis.RedisBroker",
        "OPTIONS": {"url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")},
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "INFO"}},
}
