"""The Redis broker (``jobqueue.brokers.redis.RedisBroker``), one module per job:

- ``client``: the transport (connections with bounded waits, scripts, which may be retried);
- ``codec``: signed message bodies;
- ``scripts``: the Lua scripts, each an atomic step that raises the job's version;
- ``broker``: ``RedisBroker``, the transport interface workers and producers use;
- ``outbox``: jobs waiting in the database for Redis (transactions, outages);
- ``tracking``: the Job table as a converging projection of the event stream;
- ``results``: outcomes kept in Redis, and a producer's view of a job's state;
- ``records``: operators' cancel, requeue and purge, through the scripts;
- ``durability``: configuration warnings, and re-sending what Redis lost.
"""

from jobqueue.exceptions import ConfigurationError

try:
    import redis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError(
        "the Redis broker needs the redis package: pip install 'jobqueue[redis]'"
    ) from exc

from jobqueue.brokers.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
