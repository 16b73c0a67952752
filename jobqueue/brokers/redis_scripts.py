"""The Redis broker's Lua scripts: each moves a job between structures in one atomic step.

Every key starts with the broker's prefix, which carries a hash tag (``{jobqueue}``), so each
script touches one slot of a Redis Cluster. Times come from Redis's own clock (``TIME``).

Each script below is run after ``COMMON`` (see ``source``). Layout (``P`` is the prefix):
  P:msg        hash   id -> signed message body (while the job is waiting, scheduled or running)
  P:q:<queue>:<priority>  list  ids waiting at that priority, first in first out (O(1) both
               ends: a million waiting jobs cost a claim no more than ten)
  P:levels:<queue>  zset  the priorities with waiting jobs, score -priority: highest first
  P:scheduled  zset   id -> ms when due (countdowns, etas, retries)
  P:running    zset   id -> ms when the lease expires
  P:owner      hash   id -> worker holding the lease;  P:w:<worker> set of its ids
  P:attempts   hash   id -> times taken
  P:canceled   zset   running ids canceled -> ms (their supervisors stop them)
  P:wake:<q>   list   tokens idle workers block on (BLPOP)
  P:events     stream what the Job table has yet to record (see jobqueue.tracking); each entry
               is d="kind|id|...", with p=result payload and b=body where a row needs them
               (jobs sent or claimed together share one: d="e|id,id,...",
               d="s|id:attempts,id:attempts,...|ms|worker").
               Scripts are given it as KEYS[2] only while TRACKING is on.
  P:r:<id>     string how a job ended, for RESULT_TTL seconds;  P:done  channel of finished ids
  P:sent:<id>  string marks an outbox message delivered, so a relay never sends it twice
"""

COMMON = """
local P = ARGV[1]
local EVENTS = KEYS[2]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function route(body)
  -- body: v|signature|task|queue|priority|...
  local queue, priority = string.match(body, '^[^|]*|[^|]*|[^|]*|([^|]+)|(-?%d+)|')
  return queue, tonumber(priority)
end
local function event(...)
  if EVENTS then redis.call('XADD', EVENTS, 'MAXLEN', '~', 1000000, '*', ...) end
end
-- ``front``: a job given back (its worker died or let it go) goes before those sent after it.
local function to_queue(id, body, front)
  local queue, priority = route(body)
  if queue == nil then return false end
  local key = P .. ':q:' .. queue .. ':' .. priority
  local length
  if front then
    length = redis.call('LPUSH', key, id)
  else
    length = redis.call('RPUSH', key, id)
  end
  if length == 1 then
    redis.call('ZADD', P .. ':levels:' .. queue, -priority, priority)
  end
  -- Idle workers sleep only on an empty queue: while it is short, wake one per job; a long
  -- queue has its workers awake already (and a sleeper wakes within a second anyway).
  if length <= 16 then
    local wake = P .. ':wake:' .. queue
    redis.call('LPUSH', wake, 1)
    redis.call('LTRIM', wake, 0, 63)
  end
  return true
end
local function drop_lease(id)
  redis.call('ZREM', P .. ':running', id)
  local owner = redis.call('HGET', P .. ':owner', id)
  if owner then
    redis.call('SREM', P .. ':w:' .. owner, id)
    redis.call('HDEL', P .. ':owner', id)
  end
end
-- Jobs whose time in ``key`` (scheduled: due; running: lease expired) has passed go back to
-- their queues (``front``: the lost ones, which were taken first).
local function requeue_due(key, limit, front)
  local ids = redis.call('ZRANGEBYSCORE', key, '-inf', now_ms(), 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('ZREM', key, id)
    drop_lease(id)
    local body = redis.call('HGET', P .. ':msg', id)
    if body and to_queue(id, body, front) then
      event('d', 'q|' .. id)
    end
  end
  return #ids
end
"""

# ARGV: P, dedup_ttl (0: a fresh send), then per message: id, body, run_at_ms (0: now)
ENQUEUE = """
local ttl = tonumber(ARGV[2])
local sent, queued = 0, {}
for i = 3, #ARGV, 3 do
  local id, body, run_at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fresh = true
  if ttl > 0 then
    -- A delivery from the outbox: skip a job Redis already holds, has finished, or was sent.
    fresh = redis.call('HEXISTS', P .. ':msg', id) == 0
      and redis.call('EXISTS', P .. ':r:' .. id) == 0
      and redis.call('SET', P .. ':sent:' .. id, 1, 'NX', 'EX', ttl)
  end
  if fresh then
    redis.call('HSET', P .. ':msg', id, body)
    if run_at > 0 and run_at > now_ms() then
      redis.call('ZADD', P .. ':scheduled', run_at, id)
      event('d', 'e|' .. id .. '|' .. ARGV[i + 2])
    else
      to_queue(id, body)
      queued[#queued + 1] = id
    end
    sent = sent + 1
  end
end
-- The jobs queued now share one event: the stream costs little memory per waiting job.
if #queued > 0 then event('d', 'e|' .. table.concat(queued, ',')) end
return sent
"""

# ARGV: P, worker, limit, lease_ms, queue names in order
CLAIM = """
local worker, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local out, started = {}, {}
for i = 5, #ARGV do
  local levels = P .. ':levels:' .. ARGV[i]
  while limit > 0 do
    local level = redis.call('ZRANGE', levels, 0, 0)[1]
    if not level then break end
    local key = P .. ':q:' .. ARGV[i] .. ':' .. level
    local ids = redis.call('LPOP', key, limit) or {}
    if #ids < limit or redis.call('LLEN', key) == 0 then
      redis.call('ZREM', levels, level)
    end
    for _, id in ipairs(ids) do
      local body = redis.call('HGET', P .. ':msg', id)
      if body then
        redis.call('ZADD', P .. ':running', now + lease, id)
        redis.call('HSET', P .. ':owner', id, worker)
        redis.call('SADD', P .. ':w:' .. worker, id)
        local attempts = redis.call('HINCRBY', P .. ':attempts', id, 1)
        started[#started + 1] = id .. ':' .. attempts
        out[#out + 1] = id
        out[#out + 1] = body
        out[#out + 1] = attempts
        limit = limit - 1
      end
    end
  end
end
if #started > 0 then
  event('d', 's|' .. table.concat(started, ',') .. '|' .. now .. '|' .. worker)
end
return out
"""

# ARGV: P, worker, result_ttl, then per outcome: id, status, run_at_ms, payload (JSON)
FINISH = """
local worker, ttl = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local done, notify = 0, false
for i = 4, #ARGV, 4 do
  local id, status, run_at, payload = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if redis.call('HGET', P .. ':owner', id) == worker then
    drop_lease(id)
    local body = redis.call('HGET', P .. ':msg', id) or ''
    local attempts = redis.call('HGET', P .. ':attempts', id) or '0'
    if status == 'scheduled' then
      if run_at > now then
        redis.call('ZADD', P .. ':scheduled', run_at, id)
      else
        to_queue(id, body)
        status = 'queued'
      end
    else
      redis.call('HDEL', P .. ':msg', id)
      redis.call('HDEL', P .. ':attempts', id)
      redis.call('SET', P .. ':r:' .. id, payload, 'EX', ttl)
      notify = true
    end
    event('d', 'f|' .. id .. '|' .. status .. '|' .. attempts .. '|' .. worker,
          'p', payload, 'b', body)
    done = done + 1
  end
end
-- One message per batch: a waiting producer re-reads its job's state.
if notify then redis.call('PUBLISH', P .. ':done', '') end
return done
"""

# ARGV: P, worker, count_attempt (0/1), ids (none: every job the worker holds)
RELEASE = """
local worker, count = ARGV[2], ARGV[3] == '1'
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('SMEMBERS', P .. ':w:' .. worker)
end
local released = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', P .. ':owner', id) == worker then
    drop_lease(id)
    local attempts = tonumber(redis.call('HGET', P .. ':attempts', id) or '0')
    if not count then
      attempts = redis.call('HINCRBY', P .. ':attempts', id, -1)
    end
    local body = redis.call('HGET', P .. ':msg', id)
    if body then
      to_queue(id, body, true)
      event('d', 'q|' .. id .. '|' .. attempts)
    end
    released = released + 1
  end
end
return released
"""

# ARGV: P, lease_ms, worker names
RENEW = """
local until_ms = now_ms() + tonumber(ARGV[2])
for i = 3, #ARGV do
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':w:' .. ARGV[i])) do
    redis.call('ZADD', P .. ':running', 'XX', until_ms, id)
  end
end
return 0
"""

# ARGV: P, limit
PROMOTE = """
return requeue_due(P .. ':scheduled', ARGV[2], false)
"""

# ARGV: P, limit
RECOVER = """
return requeue_due(P .. ':running', ARGV[2], true)
"""

# ARGV: P, id, result_ttl, payload. Returns 1 if the job was waiting or running.
CANCEL = """
local id, ttl, payload = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local body = redis.call('HGET', P .. ':msg', id)
if not body then return 0 end
local attempts = redis.call('HGET', P .. ':attempts', id) or '0'
local now = now_ms()
if redis.call('ZSCORE', P .. ':running', id) then
  drop_lease(id)
  redis.call('ZADD', P .. ':canceled', now, id)
  redis.call('ZREMRANGEBYSCORE', P .. ':canceled', '-inf', now - 3600000)
else
  local queue, priority = route(body)
  if queue then redis.call('LREM', P .. ':q:' .. queue .. ':' .. priority, 1, id) end
  redis.call('ZREM', P .. ':scheduled', id)
end
redis.call('HDEL', P .. ':msg', id)
redis.call('HDEL', P .. ':attempts', id)
redis.call('SET', P .. ':r:' .. id, payload, 'EX', ttl)
event('d', 'c|' .. id .. '|' .. attempts, 'p', payload, 'b', body)
redis.call('PUBLISH', P .. ':done', '')
return 1
"""

# ARGV: P, queue. Removes its waiting and scheduled jobs; returns how many.
PURGE = """
local levels = P .. ':levels:' .. ARGV[2]
local ids = {}
for _, level in ipairs(redis.call('ZRANGE', levels, 0, -1)) do
  local key = P .. ':q:' .. ARGV[2] .. ':' .. level
  for _, id in ipairs(redis.call('LRANGE', key, 0, -1)) do ids[#ids + 1] = id end
  redis.call('DEL', key)
end
for _, id in ipairs(redis.call('ZRANGE', P .. ':scheduled', 0, -1)) do
  local body = redis.call('HGET', P .. ':msg', id)
  if body and route(body) == ARGV[2] then
    redis.call('ZREM', P .. ':scheduled', id)
    ids[#ids + 1] = id
  end
end
for _, id in ipairs(ids) do
  redis.call('HDEL', P .. ':msg', id)
  redis.call('HDEL', P .. ':attempts', id)
end
redis.call('DEL', levels, P .. ':wake:' .. ARGV[2])
return #ids
"""


def source(name: str) -> str:
    """The full text of script ``name``: the shared helpers, then its body."""
    return COMMON + globals()[name]
