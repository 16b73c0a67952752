from django.apps import AppConfig
from django.db.backends.signals import connection_created


class JobQueueConfig(AppConfig):
    name = "jobqueue"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobqueue import checks, registry, sqlite

        connection_created.connect(sqlite.configure, dispatch_uid="jobqueue.sqlite")
        checks.register()
        registry.discover()
