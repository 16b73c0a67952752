"""The demo's app: installed as ``demo_project.shootr``, label ``shootr``."""

from django.apps import AppConfig


class ShootrConfig(AppConfig):
    name = "demo_project.shootr"
    label = "shootr"
    verbose_name = "Shootr (screenshot demo)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from demo_project.shootr.checks import check_private_hosts

        checks.register(check_private_hosts, "shootr")
