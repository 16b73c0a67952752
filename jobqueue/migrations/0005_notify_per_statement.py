"""On PostgreSQL, an INSERT notifies idle workers once per statement and queue, not once per
row: a batch of a thousand jobs costs one trigger call. Rows that become queued by an UPDATE (a
retry, a requeue) still notify from the row trigger, which fires for those rows only."""

from importlib import import_module

from django.db import migrations

run_on_postgresql = import_module("jobqueue.migrations.0002_notify_trigger").run_on_postgresql

CREATE = """
CREATE OR REPLACE FUNCTION jobqueue_job_notify_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('jobqueue', queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE status = 'queued') AS queues;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS jobqueue_job_notify ON jobqueue_job;
CREATE TRIGGER jobqueue_job_notify
    AFTER UPDATE OF status ON jobqueue_job
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION jobqueue_job_notify();
CREATE TRIGGER jobqueue_job_notify_inserted
    AFTER INSERT ON jobqueue_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION jobqueue_job_notify_inserted();
"""
DROP = """
DROP TRIGGER IF EXISTS jobqueue_job_notify_inserted ON jobqueue_job;
DROP FUNCTION IF EXISTS jobqueue_job_notify_inserted();
DROP TRIGGER IF EXISTS jobqueue_job_notify ON jobqueue_job;
CREATE TRIGGER jobqueue_job_notify
    AFTER INSERT OR UPDATE OF status ON jobqueue_job
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION jobqueue_job_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("jobqueue", "0004_result_expiry_index")]
    operations = [
        migrations.RunPython(run_on_postgresql(CREATE), run_on_postgresql(DROP))
    ]
