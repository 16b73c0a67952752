from django.apps import AppConfig


class ReadyAppConfig(AppConfig):
    """Installed after jobqueue: its ready() runs after jobqueue's discovery."""

    name = "tests.unit.startup.readyapp"
    label = "startup_readyapp"

    def ready(self) -> None:
        # A common pattern: signal handlers or schedules kept next to the tasks they send.
        from tests.unit.startup.readyapp.tasks import billing  # noqa: F401
