"""The demo's app: installed as ``demo_project.shootr``, label ``shootr``."""

from django.apps import AppConfig


class ShootrConfig(AppConfig):
    name = "demo_project.shootr"
    label = "shootr"
    verbose_name = "Shootr (screenshot demo)"
    default_auto_field = "django.db.models.BigAutoField"
