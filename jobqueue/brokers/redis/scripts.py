"""The Redis broker's Lua scripts: each moves a job between structures in one atomic step.

Every key starts with the broker's prefix, which carries a hash tag (``{jobqueue}``), so each
script touches one slot of a Redis Cluster. Times come from Redis's own clock (``TIME``).

Every change a script makes to a job raises the job's version (``P:ver``); a claim's version is
its fencing token, so a finish, release or renewal carrying an older one is refused. A version
is never below Redis's clock in microseconds (``next_version``): it rises across a job's lives
without asking the Job table, and after Redis comes back from an older snapshot no token handed
out before is handed out again. A number a script reads from Redis is checked before anything is
written (a script that fails half-way is not undone): a job whose attempts or version is no
number is left alone, for the sweep (``SWEEP``) to put right. Every event
carries the version it made, so the Job table (a projection of these events) applies an event
only if it is newer than the row. Each script is safe to run twice (a client's retry): a send
skips a job Redis already holds or has finished, a claim replays its first reply, and finish,
release and renewal are fenced by the token.

Each script below is run after ``COMMON`` (see ``source``). Layout (``P`` is the prefix):
  P:msg        hash   id -> signed message body (while the job is waiting, scheduled or running)
  P:ver        hash   id -> version (while the job is live; a finished job's is in P:r:<id>)
  P:q:<queue>:<priority>  list  entries "id:version" waiting at that priority, first in first
               out; an entry whose version is no longer the job's is stale and skipped (a job
               canceled while waiting is not searched for in its list)
  P:levels:<queue>  zset  the priorities with waiting jobs, score -priority: highest first
  P:scheduled  zset   id -> ms when due (countdowns, etas, retries)
  P:running    zset   id -> ms when the lease expires;  P:owner hash id -> "worker|started ms"
  P:attempts   hash   id -> times taken
  P:canceled   zset   running ids canceled -> ms (their supervisors stop them; a claim clears it)
  P:wake:<q>   list   tokens idle workers block on (BLPOP)
  P:claim:<request>  string  a claim's jobs and tokens, kept 5 s so a retried claim gets them again
  P:strays     list   the last 1000 queue entries that were no job, or a job whose record is
               damaged (logged by the claimer)
  P:events     stream what the Job table has yet to record (see tracking); never trimmed past
               what it has recorded. Each entry is d="kind|...", with p=outcome and b=body where
               a row needs them. Scripts are given it as KEYS[2] only while TRACKING is on.
  P:r:<id>     string "version|outcome JSON" of a finished job, for RESULT_TTL seconds
  P:done       channel of finished ids
"""

COMMON = """
local P = ARGV[1]
local EVENTS = KEYS[2]
local clock
local function now_us()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return clock
end
local function now_ms()
  return math.floor(now_us() / 1000)
end
-- A whole number Redis holds for a job (attempts, a version): 0 if absent, nil if it is not one
-- (written by hand): such a job is left alone (a stray) until the sweep puts it right.
local function number(value)
  if not value then return 0 end
  if string.match(value, '^%-?%d+$') and #value <= 16 then return tonumber(value) end
  return nil
end
-- A job's next version: above its last one, and never below Redis's clock in microseconds, so
-- versions rise across a job's lives whatever the Job table has recorded yet, and again after
-- Redis came back from an older snapshot. Below 2^53 (exact in Lua's numbers) until 2255;
-- formatted as an integer (Lua would print 1.7e+15).
local function next_version(last)
  return string.format('%d', math.max((last or 0) + 1, now_us()))
end
-- At maxmemory with noeviction, Redis refuses a script's first write that may grow memory; once
-- the script has written, the rest is let through (it cannot stop half-way). Scripts that keep
-- work going when memory is full (renewals; the tracker's lock, so that the stream is trimmed)
-- begin with this write, which changes nothing.
local function keep_going()
  redis.call('ZREM', P .. ':running', '')
end
local function refuse_bar(name)
  if string.find(name, '|', 1, true) then
    return error({err = "a worker name may not contain '|': " .. name})
  end
end
-- body: v|signature|task|queue|priority|max_retries|...
local function route(body)
  local queue, priority = string.match(body, '^[^|]*|[^|]*|[^|]*|([^|]+)|(-?%d+)|')
  return queue, tonumber(priority)
end
local function max_retries(body)
  return tonumber(string.match(body, '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|(%d+)|') or '0')
end
local function event(...)
  if EVENTS then redis.call('XADD', EVENTS, '*', ...) end
end
local function bump(id)
  local ver = next_version(number(redis.call('HGET', P .. ':ver', id)))
  redis.call('HSET', P .. ':ver', id, ver)
  return ver
end
-- ``front``: a job given back unrun keeps its place; anything else joins the back.
local function to_queue(id, ver, body, front)
  local queue, priority = route(body)
  if queue == nil then return false end
  local key = P .. ':q:' .. queue .. ':' .. priority
  local length
  if front then
    length = redis.call('LPUSH', key, id .. ':' .. ver)
  else
    length = redis.call('RPUSH', key, id .. ':' .. ver)
  end
  -- Always: a stray entry pushed by hand must not keep this level out of the index.
  redis.call('ZADD', P .. ':levels:' .. queue, -priority, priority)
  -- Idle workers sleep only on an empty queue: while it is short, wake one per job; a long
  -- queue has its workers awake already (and a sleeper wakes within a second anyway).
  if length <= 16 then
    local wake = P .. ':wake:' .. queue
    if redis.call('LPUSH', wake, 1) > 64 then redis.call('LTRIM', wake, 0, 63) end
  end
  return true
end
-- A queue entry: the job's id and the version it was queued at (false: an entry made before
-- versions, a bare id, still the job's place); nil if it is no job's entry.
local UUID = string.rep('%x', 8) .. '%-' .. string.rep('%x', 4) .. '%-' .. string.rep('%x', 4)
  .. '%-' .. string.rep('%x', 4) .. '%-' .. string.rep('%x', 12)
local function parse_entry(entry)
  local id, ver = string.match(entry, '^(' .. UUID .. '):(%d+)$')
  if id then return id, ver end
  if redis.call('HEXISTS', P .. ':ver', entry) == 0
     and redis.call('HEXISTS', P .. ':msg', entry) == 1 then
    return entry, false
  end
  return nil, nil
end
-- Whether the entry is the job's current place in its queue (not one it moved on from).
local function current(id, ver)
  if ver == false then return redis.call('HEXISTS', P .. ':ver', id) == 0 end
  return redis.call('HGET', P .. ':ver', id) == ver
end
local function held(id, token)
  return redis.call('ZSCORE', P .. ':running', id)
    and redis.call('HGET', P .. ':ver', id) == token
end
local function owner(id)
  local value = redis.call('HGET', P .. ':owner', id) or ''
  local worker, started = string.match(value, '^(.*)|(%d+)$')
  return worker or '', started or '0'
end
local function drop_lease(id)
  redis.call('ZREM', P .. ':running', id)
  redis.call('HDEL', P .. ':owner', id)
end
local function forget(id)
  redis.call('HDEL', P .. ':msg', id)
  redis.call('HDEL', P .. ':ver', id)
  redis.call('HDEL', P .. ':attempts', id)
  redis.call('HDEL', P .. ':owner', id)
end
-- The job ended: its outcome is kept RESULT_TTL seconds with its version, the record goes out.
local function finished(id, ver, status, attempts, worker, payload, body, ttl)
  forget(id)
  redis.call('SET', P .. ':r:' .. id, ver .. '|' .. payload, 'EX', ttl)
  event('d', 'f|' .. id .. '|' .. status .. '|' .. attempts .. '|' .. worker .. '|' .. ver,
        'p', payload, 'b', body)
end
-- A run that may have happened ended without an outcome (its process died, or its lease
-- lapsed): the attempt counts; past max_retries (and after two runs at least) the job fails.
-- Returns true if it failed; the ids and tasks of the jobs failed so are kept in
-- ``lost_for_good``.
-- ``head`` .. attempts .. ``tail``: the failure's words (brokers.base.worker_lost_error).
-- A lost run retried says, for its attempt's record, when it ran and where ('w').
local lost_for_good = {}
local function lose(id, why, head, tail, ttl, now)
  local worker, started = owner(id)
  drop_lease(id)
  local body = redis.call('HGET', P .. ':msg', id) or ''
  local attempts = number(redis.call('HGET', P .. ':attempts', id))
  if attempts == nil then  -- written by hand: counted afresh
    attempts = 0
    redis.call('HSET', P .. ':attempts', id, 0)
  end
  local ver = bump(id)
  if attempts > max_retries(body) and attempts >= 2 then
    local payload = cjson.encode({
      status = 'failed', error = head .. attempts .. tail, traceback = '', result = cjson.null,
      started_ms = tonumber(started), ended_ms = now})
    finished(id, ver, 'failed', attempts, worker, payload, body, ttl)
    lost_for_good[#lost_for_good + 1] = id
    lost_for_good[#lost_for_good + 1] = string.match(body, '^[^|]*|[^|]*|([^|]*)|') or ''
    return true
  end
  to_queue(id, ver, body, false)
  event('d', 'q|' .. id .. '|' .. attempts .. '|' .. ver,
        'e', 'WorkerLost: its worker process died (' .. why .. ')',
        'w', started .. '|' .. now .. '|' .. worker)
  return false
end
"""

# ARGV: P, then per message: id, body, run_at_ms (0: now), attempts.
# A job Redis holds or has finished is skipped (a retried send, an outbox relay, a re-send
# after a loss). Returns the ids sent.
ENQUEUE = """
local now = now_ms()
local sent, queued = {}, {}
for i = 2, #ARGV, 4 do
  local id, body, run_at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local ver, attempts = next_version(0), tonumber(ARGV[i + 3])
  if redis.call('EXISTS', P .. ':r:' .. id) == 0
     and redis.call('HSETNX', P .. ':msg', id, body) == 1 then
    redis.call('HSET', P .. ':ver', id, ver)
    local entry = id .. ':' .. ver
    if attempts > 0 then
      redis.call('HSET', P .. ':attempts', id, attempts)
      entry = entry .. ':' .. attempts
    end
    if run_at > now then
      redis.call('ZADD', P .. ':scheduled', run_at, id)
      event('d', 'e|' .. entry .. '|' .. run_at)
    else
      to_queue(id, ver, body, false)
      queued[#queued + 1] = entry
    end
    sent[#sent + 1] = id
  end
end
-- The jobs queued now share one event: the stream costs little memory per waiting job.
if #queued > 0 then event('d', 'e|' .. table.concat(queued, ',')) end
return sent
"""

# ARGV: P, worker, limit, lease_ms, request id, queue names in order.
# Returns {id, body, attempts, token, ...} and the stray entries met: {messages, strays}.
CLAIM = """
local worker, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
refuse_bar(worker)
local replay = P .. ':claim:' .. ARGV[5]
local previous = redis.call('GET', replay)
if previous then
  -- A retried claim: the same jobs again, those still held under its tokens.
  local out = {}
  local kept = cjson.decode(previous)
  for i = 1, #kept, 3 do
    local id = kept[i]
    local body = redis.call('HGET', P .. ':msg', id)
    if body and redis.call('HGET', P .. ':ver', id) == tostring(kept[i + 2]) then
      out[#out + 1] = id
      out[#out + 1] = body
      out[#out + 1] = kept[i + 1]
      out[#out + 1] = kept[i + 2]
    end
  end
  return {out, {}}
end
local now = now_ms()
local out, started, strays = {}, {}, {}
for i = 6, #ARGV do
  local levels = P .. ':levels:' .. ARGV[i]
  while limit > 0 do
    local level = redis.call('ZRANGE', levels, 0, 0)[1]
    if not level then break end
    local key = P .. ':q:' .. ARGV[i] .. ':' .. level
    local entries = redis.call('LPOP', key, limit) or {}
    if #entries < limit or redis.call('LLEN', key) == 0 then
      redis.call('ZREM', levels, level)
    end
    for _, entry in ipairs(entries) do
      local id, ver = parse_entry(entry)
      local body = id and redis.call('HGET', P .. ':msg', id)
      -- Checked before anything is written: a script that fails half-way is not undone.
      local runs, stored = nil, false
      if body then
        runs = number(redis.call('HGET', P .. ':attempts', id))
        stored = redis.call('HGET', P .. ':ver', id)
      end
      local damaged = body and (runs == nil or number(stored) == nil)
      -- The entry is the job's current place (from the version read above).
      local here = (ver == false and not stored) or (ver ~= false and stored == ver)
      if body and not damaged and here then
        local token = next_version(number(stored))
        redis.call('HSET', P .. ':ver', id, token)
        redis.call('ZADD', P .. ':running', now + lease, id)
        redis.call('HSET', P .. ':owner', id, worker .. '|' .. now)
        redis.call('ZREM', P .. ':canceled', id)
        local attempts = runs + 1
        redis.call('HSET', P .. ':attempts', id, attempts)
        started[#started + 1] = id .. ':' .. attempts .. ':' .. token
        out[#out + 1] = id
        out[#out + 1] = body
        out[#out + 1] = attempts
        out[#out + 1] = token
        limit = limit - 1
      elseif damaged or not (id and (ver or redis.call('HEXISTS', P .. ':ver', id) == 1
                                    or redis.call('EXISTS', P .. ':r:' .. id) == 1)) then
        -- Not a job's place it moved on from ("id:version" entries are skipped quietly, also
        -- once the job is forgotten): junk, a bare id with no body, or a job whose attempts
        -- or version are no number (the sweep puts it back once repaired).
        strays[#strays + 1] = entry
        redis.call('LPUSH', P .. ':strays', entry)
        redis.call('LTRIM', P .. ':strays', 0, 999)
      end
    end
  end
end
if #started > 0 then
  event('d', 's|' .. table.concat(started, ',') .. '|' .. now .. '|' .. worker)
end
if #out > 0 then
  -- Kept a few seconds, for a client that lost the reply and sends the claim again.
  local kept = {}
  for i = 1, #out, 4 do
    kept[#kept + 1] = out[i]
    kept[#kept + 1] = out[i + 2]
    kept[#kept + 1] = out[i + 3]
  end
  redis.call('SET', replay, cjson.encode(kept), 'PX', 5000)
end
return {out, strays}
"""

# ARGV: P, worker, result_ttl, then per outcome: id, token, status, run_at_ms, payload (JSON)
# Returns {outcomes taken, ids of the jobs they finished for good}.
FINISH = """
local worker, ttl = ARGV[2], tonumber(ARGV[3])
refuse_bar(worker)
local now = now_ms()
local done, notify, ended = 0, false, {}
for i = 4, #ARGV, 5 do
  local id, token, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local run_at, payload = tonumber(ARGV[i + 3]), ARGV[i + 4]
  if held(id, token) then
    drop_lease(id)
    local body = redis.call('HGET', P .. ':msg', id) or ''
    local attempts = number(redis.call('HGET', P .. ':attempts', id)) or 0
    local ver = bump(id)
    if status == 'scheduled' then
      if run_at > now then
        redis.call('ZADD', P .. ':scheduled', run_at, id)
      else
        to_queue(id, ver, body, false)
        status = 'queued'
      end
      event('d', 'f|' .. id .. '|' .. status .. '|' .. attempts .. '|' .. worker .. '|' .. ver,
            'p', payload, 'b', body)
    else
      finished(id, ver, status, attempts, worker, payload, body, ttl)
      notify = true
      ended[#ended + 1] = id
    end
    done = done + 1
  end
end
-- One message per batch: a waiting producer re-reads its job's state.
if notify then redis.call('PUBLISH', P .. ':done', '') end
return {done, ended}
"""

# ARGV: P, worker, lost ('' : never started), head, tail, result_ttl, then per lease: id, token
# Returns {leases released, {id, task, ...} of the jobs failed for good}.
RELEASE = """
local why, head, tail, ttl = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
refuse_bar(ARGV[2])
local now = now_ms()
local released, notify = 0, false
for i = 7, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if held(id, token) then
    if why == '' then
      drop_lease(id)
      local attempts = math.max((number(redis.call('HGET', P .. ':attempts', id)) or 1) - 1, 0)
      redis.call('HSET', P .. ':attempts', id, attempts)
      local ver = bump(id)
      to_queue(id, ver, redis.call('HGET', P .. ':msg', id) or '', true)
      event('d', 'q|' .. id .. '|' .. attempts .. '|' .. ver)
    elseif lose(id, why, head, tail, ttl, now) then
      notify = true
    end
    released = released + 1
  end
end
if notify then redis.call('PUBLISH', P .. ':done', '') end
return {released, lost_for_good}
"""

# ARGV: P, lease_ms, then per lease: id, token. Returns the ids no longer held.
RENEW = """
keep_going()
local until_ms = now_ms() + tonumber(ARGV[2])
local gone = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1]) then
    redis.call('ZADD', P .. ':running', 'XX', until_ms, id)
  else
    gone[#gone + 1] = id
  end
end
return gone
"""

# ARGV: P, limit
PROMOTE = """
local ids = redis.call('ZRANGEBYSCORE', P .. ':scheduled', '-inf', now_ms(), 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':scheduled', id)
  local body = redis.call('HGET', P .. ':msg', id)
  if body then
    local ver = bump(id)
    to_queue(id, ver, body, false)
    event('d', 'q|' .. id .. '||' .. ver)
  end
end
return #ids
"""

# ARGV: P, limit, why, head, tail, result_ttl. Expired leases: their runs are lost (``lose``).
# Returns {leases recovered, {id, task, ...} of the jobs failed for good}.
RECOVER = """
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now, 'LIMIT', 0, ARGV[2])
local notify = false
for _, id in ipairs(ids) do
  if lose(id, ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), now) then notify = true end
end
if notify then redis.call('PUBLISH', P .. ':done', '') end
return {#ids, lost_for_good}
"""

# ARGV: P, id, result_ttl, payload, in_outbox (0/1). Returns 1 if the job was
# waiting or running (or sent but not yet delivered), 0 if it has finished or is unknown.
CANCEL = """
local id, ttl, payload = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local body = redis.call('HGET', P .. ':msg', id)
if not body then
  if ARGV[5] ~= '1' or redis.call('EXISTS', P .. ':r:' .. id) == 1 then return 0 end
  -- Still in the outbox: this outcome keeps any relay from delivering it.
  local ver = next_version(0)
  redis.call('SET', P .. ':r:' .. id, ver .. '|' .. payload, 'EX', math.max(ttl, 3600))
  event('d', 'c|' .. id .. '||' .. ver, 'p', payload)
  return 1
end
local attempts = number(redis.call('HGET', P .. ':attempts', id)) or 0
local now = now_ms()
local ver = bump(id)
if redis.call('ZSCORE', P .. ':running', id) then
  drop_lease(id)
  redis.call('ZADD', P .. ':canceled', now, id)
  redis.call('ZREMRANGEBYSCORE', P .. ':canceled', '-inf', now - 3600000)
else
  -- A waiting job's queue entry goes stale (its version is no longer the job's).
  redis.call('ZREM', P .. ':scheduled', id)
end
forget(id)
redis.call('SET', P .. ':r:' .. id, ver .. '|' .. payload, 'EX', ttl)
event('d', 'c|' .. id .. '|' .. attempts .. '|' .. ver, 'p', payload, 'b', body)
redis.call('PUBLISH', P .. ':done', '')
return 1
"""

# ARGV: P, then per job: id, signed body (as first sent). Only a job that failed or was
# canceled (or whose outcome has expired) and is not live goes back; it starts afresh at the back
# of its queue, at a version above any it had (``next_version``: never one from the Job table,
# which may lag). An outcome that cannot be read (written by hand) leaves its job alone.
# Returns the ids requeued.
REQUEUE = """
local now = now_ms()
local done = {}
for i = 2, #ARGV, 2 do
  local id, body = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', P .. ':msg', id) == 0 then
    local ended = redis.call('GET', P .. ':r:' .. id)
    local last, outcome, readable = 0, nil, true
    if ended then
      local v, json = string.match(ended, '^(%d+)|(.*)$')
      last = number(v) or 0
      local ok, data = pcall(cjson.decode, json or ended)
      if ok and type(data) == 'table' then outcome = data.status else readable = false end
    end
    if readable and (outcome == nil or outcome == 'failed' or outcome == 'canceled') then
      local ver = next_version(last)
      redis.call('HSET', P .. ':msg', id, body)
      redis.call('HSET', P .. ':ver', id, ver)
      redis.call('HDEL', P .. ':attempts', id)
      redis.call('DEL', P .. ':r:' .. id)
      redis.call('ZREM', P .. ':canceled', id)
      to_queue(id, ver, body, false)
      event('d', 'r|' .. id .. '|' .. ver .. '|' .. now, 'b', body)
      done[#done + 1] = id
    end
  end
end
return done
"""

# ARGV: P, queue, limit, cursor (a rank in P:scheduled; -1: done with it).
# Removes up to ``limit`` of the queue's waiting jobs, then scans ``limit`` scheduled ones.
# Returns {removed, cursor, waiting left (0/1)}: the caller repeats until nothing is left, so
# no one call blocks Redis for long whatever the queue's length.
PURGE = """
local queue, limit, cursor = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local levels = P .. ':levels:' .. queue
local purged = {}
local budget = limit
local function purge(id)
  local ver = bump(id)
  forget(id)
  purged[#purged + 1] = id .. ':' .. ver
end
while budget > 0 do
  local level = redis.call('ZRANGE', levels, 0, 0)[1]
  if not level then break end
  local key = P .. ':q:' .. queue .. ':' .. level
  local entries = redis.call('LPOP', key, budget) or {}
  if #entries < budget or redis.call('LLEN', key) == 0 then redis.call('ZREM', levels, level) end
  budget = budget - #entries
  for _, entry in ipairs(entries) do
    local id, ver = parse_entry(entry)
    if id and current(id, ver) and redis.call('HEXISTS', P .. ':msg', id) == 1 then
      purge(id)
    end
  end
end
if budget > 0 and cursor >= 0 then
  local ids = redis.call('ZRANGE', P .. ':scheduled', cursor, cursor + budget - 1)
  local next_cursor = cursor + #ids
  for _, id in ipairs(ids) do
    local body = redis.call('HGET', P .. ':msg', id)
    if body and route(body) == queue then
      redis.call('ZREM', P .. ':scheduled', id)
      purge(id)
      next_cursor = next_cursor - 1
    end
  end
  if #ids < budget then next_cursor = -1 end
  cursor = next_cursor
end
if #purged > 0 then event('d', 'x|' .. table.concat(purged, ',')) end
return {#purged, cursor, redis.call('EXISTS', levels)}
"""

# ARGV: P, cursor (of HSCAN over P:msg), count, longest queue searched.
# A job Redis holds that is in no queue, not running and not scheduled (its entry was lost: a
# hand-written value made a claim skip it, a list edited by hand) goes back to the back of its
# queue at a new version; a forged attempts count is reset first. A job whose queue is longer
# than the limit is not searched for (that would block Redis). Returns {cursor, {id, why, ...}}.
SWEEP = """
local scan = redis.call('HSCAN', P .. ':msg', ARGV[2], 'COUNT', tonumber(ARGV[3]))
local longest = tonumber(ARGV[4])
local found = {}
local fields = scan[2]
for i = 1, #fields, 2 do
  local id, body = fields[i], fields[i + 1]
  local live = redis.call('ZSCORE', P .. ':running', id)
    or redis.call('ZSCORE', P .. ':scheduled', id)
  if not live then
    local why = nil
    local stored = redis.call('HGET', P .. ':ver', id)
    if number(redis.call('HGET', P .. ':attempts', id)) == nil then
      redis.call('HSET', P .. ':attempts', id, 0)
      why = 'attempts not a number'
    elseif stored and number(stored) == nil then
      why = 'version not a number'
    else
      local queue, priority = route(body)
      if queue then
        local key = P .. ':q:' .. queue .. ':' .. priority
        if redis.call('LLEN', key) <= longest
           and not redis.call('LPOS', key, id .. ':' .. (stored or ''))
           and not redis.call('LPOS', key, id) then
          why = 'in no queue'
        end
      end
    end
    if why then
      local ver = bump(id)
      if to_queue(id, ver, body, false) then
        local attempts = number(redis.call('HGET', P .. ':attempts', id)) or 0
        event('d', 'q|' .. id .. '|' .. attempts .. '|' .. ver)
        found[#found + 1] = id
        found[#found + 1] = why
      end
    end
  end
end
return {scan[1], found}
"""

# Locks (tracking's, the relay's): a token each holder draws; only the holder extends or frees
# its lock. ARGV: P, name, token, lock_ms. Returns 1 if taken.
LOCK = """
keep_going()
if redis.call('SET', P .. ':' .. ARGV[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return 1 end
return 0
"""

# ARGV: P, name, token, lock_ms
EXTEND = """
if redis.call('GET', P .. ':' .. ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('PEXPIRE', P .. ':' .. ARGV[2], ARGV[4])
return 1
"""

# ARGV: P, name, token
UNLOCK = """
if redis.call('GET', P .. ':' .. ARGV[2]) == ARGV[3] then
  return redis.call('DEL', P .. ':' .. ARGV[2])
end
return 0
"""

# ARGV: P, token, lock_ms, through (stream id). The tracked position only moves forward, and
# only its lock's holder moves it; the stream is trimmed to what has been recorded.
TRACK_COMMIT = """
if redis.call('GET', P .. ':tracker') ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', P .. ':tracker', ARGV[3])
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms or '0'), tonumber(seq or '0')
end
local current = redis.call('GET', P .. ':tracked') or '0-0'
local cms, cseq = parse(current)
local ms, seq = parse(ARGV[4])
if ms > cms or (ms == cms and seq > cseq) then
  redis.call('SET', P .. ':tracked', ARGV[4])
  if EVENTS then redis.call('XTRIM', EVENTS, 'MINID', ARGV[4]) end
end
return 1
"""


def source(name: str) -> str:
    """The full text of script ``name``: the shared helpers, then its body."""
    return COMMON + globals()[name]
