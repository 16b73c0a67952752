"""What only the Redis broker does (the shared contract: test_broker_contract.py)."""

import pytest
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.test import override_settings

from jobqueue import signing
from jobqueue.brokers import get_broker
from jobqueue.brokers.redis import RedisBroker
from jobqueue.exceptions import ConfigurationError
from jobqueue.models import Job
from tests.redis_server import redis_broker_settings, require_redis_broker
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _redis_available():
    require_redis_broker()


def test_options_must_name_a_server():
    with pytest.raises(ConfigurationError, match="needs OPTIONS"):
        RedisBroker()
    with pytest.raises(ConfigurationError, match="bare"):
        RedisBroker(url="redis://127.0.0.1:1/0", prefix="{x}")


def test_a_django_redis_cache_connection_can_be_shared(redis_server):
    caches = {"jobs": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url}}
    broker_settings = {"BACKEND": "jobqueue.brokers.redis.RedisBroker",
                       "OPTIONS": {"cache": "jobs", "prefix": "cachetest"}}
    with override_settings(CACHES=caches, JOBQUEUE={"BROKER": broker_settings}):
        broker = get_broker()
        job = add.delay(2, 3)
        [message] = broker.claim(["default"], "w", 5)
        assert message.id == job.id
        assert redis_server.client().hexists("{cachetest}:msg", job.id)
        broker.release("w")


def test_signatures_made_with_a_retired_key_still_verify():
    with override_settings(SECRET_KEY="old-key-" + "x" * 40):
        signature = signing.sign("payload")
    with override_settings(SECRET_KEY="new-key-" + "y" * 40,
                           SECRET_KEY_FALLBACKS=["old-key-" + "x" * 40]):
        assert signing.verify("payload", signature)
        assert not signing.verify("payload altered", signature)
    with override_settings(SECRET_KEY="new-key-" + "y" * 40, SECRET_KEY_FALLBACKS=[]):
        assert not signing.verify("payload", signature)


def test_check_deploy_warns_when_redis_keeps_nothing_on_disk(redis_server, durable_redis):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "c1")}):
        ids = [m.id for m in run_checks(include_deployment_checks=True)]
        assert "jobqueue.W001" in ids
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(durable_redis.url, "c2")}):
        assert "jobqueue.W001" not in [m.id for m in run_checks(include_deployment_checks=True)]
        durable_redis.client().config_set("maxmemory-policy", "allkeys-lru")
        [warning] = [m for m in run_checks(include_deployment_checks=True)
                     if m.id == "jobqueue.W001"]
        assert "noeviction" in warning.msg


def test_the_admin_list_shows_jobs_not_yet_tracked(redis_server, client):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "adm")}):
        job = add.delay(1, 1)
        assert not Job.objects.filter(id=job.id).exists()  # recorded in the background
        client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        page = client.get("/admin/jobqueue/job/").content.decode()
        assert job.id in page


def test_a_worker_waiting_after_redis_lost_its_scripts_claims_once_reloaded(redis_server):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "nos")}):
        broker = get_broker()
        job = add.delay(1, 1)
        redis_server.client().script_flush()
        assert broker.wait_and_claim(["default"], "w", 5, timeout=0.1) == []
        [message] = broker.wait_and_claim(["default"], "w", 5, timeout=0.1)
        assert message.id == job.id
