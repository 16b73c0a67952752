"""On PostgreSQL, wake idle workers (LISTEN jobqueue) whenever a job becomes queued."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION jobqueue_job_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('jobqueue', NEW.queue);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS jobqueue_job_notify ON jobqueue_job;
CREATE TRIGGER jobqueue_job_notify
    AFTER INSERT OR UPDATE OF status ON jobqueue_job
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION jobqueue_job_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS jobqueue_job_notify ON jobqueue_job;
DROP FUNCTION IF EXISTS jobqueue_job_notify();
"""


def run_on_postgresql(sql):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("jobqueue", "0001_initial")]
    operations = [migrations.RunPython(run_on_postgresql(CREATE), run_on_postgresql(DROP))]
