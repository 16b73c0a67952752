from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.utils.module_loading import autodiscover_modules


class JobQueueConfig(AppConfig):
    name = "jobqueue"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from importlib import import_module

        from jobqueue import checks, sqlite
        from jobqueue.conf import get_settings

        connection_created.connect(sqlite.configure, dispatch_uid="jobqueue.sqlite")
        checks.register()
        conf = get_settings()
        if conf.AUTODISCOVER:
            autodiscover_modules("tasks")
        for module in conf.TASK_MODULES:
            import_module(module)
