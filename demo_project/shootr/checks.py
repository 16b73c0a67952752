"""System checks: a malformed ``SHOOTR_ALLOW_PRIVATE_HOSTS`` is refused at startup (``manage.py
check``, ``runserver``, ``jobworker``), not at the first screenshot a visitor asks for."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from demo_project.shootr.urlsafety import private_access


def check_private_hosts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        private_access()
    except ImproperlyConfigured as exc:
        return [checks.Error(
            str(exc),
            hint="True or 1 for every private host (development only), or addresses with an "
                 "optional port: 127.0.0.1:8000, [::1]:8000, 10.0.0.5",
            id="shootr.E001",
        )]
    return []
