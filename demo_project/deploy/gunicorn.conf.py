"""Gunicorn for the Shootr web site; nginx in front serves /static and /media itself."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8001")
workers = int(os.environ.get("GUNICORN_WORKERS", 2 * multiprocessing.cpu_count() + 1))
threads = 2
timeout = 30  # web requests only enqueue; screenshots never run in the web process
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "127.0.0.1"
wsgi_app = "demo_project.wsgi:application"
