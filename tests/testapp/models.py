from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text


class Run(models.Model):
    """One row per run of a counted task, written when the run starts (autocommit): a lost run
    or a run twice shows in the count by ``key``, whatever jobqueue recorded."""

    key = models.CharField(max_length=200, db_index=True)
    pid = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.key} in {self.pid}"
