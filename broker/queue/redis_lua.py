"""The Redis queue's scripts: every multi-key step runs as one Lua script, so it is atomic.

Keys, under the installation's prefix ``P`` (``eventwire:`` by default)::

    P i:<id>            hash   one unfinished invocation (fields below)
    P p:<id>            string an invocation's payload when it is stored out of line;
                               removed once the history writer has its final state,
                               or once a retry gives it a payload kept in line
    P r:<function>      zset   runnable invocations, scored by enqueue sequence
    P d:<function>      zset   delayed invocations (retries), scored by available-at µs
    P l:<lane>          list   a lane's unfinished invocations in order; only its head
                               is ever in r: or d:
    P x                 zset   leased invocations, scored by lease expiry µs
    P c                 hash   running count per function, and ``*`` for all
    P t                 hash   throttles per function not yet copied to the SQL store
    P g:<id>            string enqueue guard for a keyless invocation (short window)
    P k:<fn>:<key>      string the invocation id an idempotency key maps to
    P seq               int    enqueue sequence
    P h                 stream history events (enqueues, settlements) for the SQL store:
                               field ``e`` a script's events, ``x`` the ids of those
                               that finished with an out-of-line payload
    P wake              pubsub "there is work" for idle dispatchers

Invocation hash fields: ``f`` function, ``p`` payload, ``r`` request id, ``o``
origin, ``l`` lane, ``k`` idempotency key, ``y`` sync, ``a`` attempts, ``fe``/``se``
function/system errors, ``fq`` first enqueued (µs), ``av`` available at (µs), ``s``
source (JSON), ``q`` sequence, ``t`` lease token ('' when not leased), ``x`` '1' when
the payload is out of line (``p`` is then '').

Payloads out of line: every string that enters a script becomes a Lua string,
and Redis's Lua hashes each one whole as it makes it — about 20 µs of the
server's time for 27 KB, several times over an enqueue. A payload larger than
:data:`broker.queue.redis.INLINE_PAYLOAD` is written by a plain ``SET p:<id>``
in the same MULTI as the script, and no script ever reads it: the lease's
caller fetches it with ``MGET``. The history writer copies it into the SQL
store with the invocation's final state (until then the row there holds an
empty payload: ``eventwire invocations show`` reads it from here), and deletes
the key together with moving its cursor past that final event.

A lease token is ``<invocation id>/<nonce>``, so a token alone finds its invocation.
Finished invocations leave Redis: their history is in the stream until the SQL
store has it.
"""

from __future__ import annotations

ENQUEUE_FIELDS = 12
"""Arguments per new invocation: id, function, payload ('' when out of line), request
id, origin, lane, idempotency key, sync, first enqueued µs, available at µs, source,
out of line ('1' | '0'); plus its history event as a thirteenth."""

_PRELUDE = """
local P = ARGV[1]
local NOW = tonumber(ARGV[2])

local function schedule(id, fn, seq, avail)
  if tonumber(avail) <= NOW then
    redis.call('ZADD', P .. 'r:' .. fn, seq, id)
    return true
  end
  redis.call('ZADD', P .. 'd:' .. fn, avail, id)
  return false
end

-- An out-of-line payload the caller wrote for an invocation that is not made.
local function drop_payload(i)
  if ARGV[i + 11] == '1' then redis.call('DEL', P .. 'p:' .. ARGV[i]) end
end

-- Reads ENQUEUE_FIELDS + 1 arguments from position i of ARGV; returns the next
-- position, the id answered, whether it was created, whether it is runnable now.
local function enqueue_one(i, seq, key_window, guard_window, events)
  local id, fn, lane, key = ARGV[i], ARGV[i + 1], ARGV[i + 5], ARGV[i + 6]
  local guard, ttl
  if key ~= '' then
    guard, ttl = P .. 'k:' .. fn .. ':' .. key, key_window
  else
    guard, ttl = P .. 'g:' .. id, guard_window
  end
  local prev = redis.call('SET', guard, id, 'NX', 'GET', 'EX', ttl)
  if prev then
    -- A retried call finds its own id: the payload is this invocation's.
    if prev ~= id then drop_payload(i) end
    return i + 13, prev, 0, false
  end
  local avail = ARGV[i + 9]
  redis.call('HSET', P .. 'i:' .. id,
    'f', fn, 'p', ARGV[i + 2], 'r', ARGV[i + 3], 'o', ARGV[i + 4], 'l', lane, 'k', key,
    'y', ARGV[i + 7], 'a', 0, 'fe', 0, 'se', 0, 'fq', ARGV[i + 8], 'av', avail,
    's', ARGV[i + 10], 'q', seq, 't', '', 'x', ARGV[i + 11])
  events[#events + 1] = ARGV[i + 12]
  local runnable = false
  if lane == '' or redis.call('RPUSH', P .. 'l:' .. lane, id) == 1 then
    runnable = schedule(id, fn, seq, avail)
  end
  return i + 13, id, 1, runnable
end

-- One stream entry for a script's events, a JSON array made in one concatenation:
-- every string Lua makes costs a pass over it. ``apart`` (optional): ids of invocations
-- that finished with their payload out of line, as field ``x`` (space-separated): the
-- history writer copies those payloads with their final state.
local function record(events, apart)
  if #events > 0 then
    local parts = {'['}
    for j, e in ipairs(events) do
      parts[2 * j] = e
      parts[2 * j + 1] = ','
    end
    parts[#parts] = ']'
    if apart and #apart > 0 then
      redis.call('XADD', P .. 'h', '*', 'e', table.concat(parts), 'x', table.concat(apart, ' '))
    else
      redis.call('XADD', P .. 'h', '*', 'e', table.concat(parts))
    end
  end
end

local function held(token)
  local id = string.match(token, '^(.-)/')
  if not id then return nil end
  local h = P .. 'i:' .. id
  local v = redis.call('HMGET', h, 't', 'f', 'l', 'q', 'x')
  if v[1] ~= token then return nil end
  return id, h, v[2], v[3], v[4], v[5] == '1'
end

-- Leases invocation ``id`` (of ``fn``) under ``token`` until ``expires``: its lease row.
-- The caller takes it off r: and counts it running.
local function take(id, fn, token, expires)
  local h = P .. 'i:' .. id
  local v = redis.call('HMGET', h,
    'p', 'r', 'o', 'l', 'k', 'y', 'fe', 'se', 'fq', 'av', 's', 'a', 'x')
  local attempts = tonumber(v[12]) + 1
  redis.call('HSET', h, 't', token, 'a', attempts)
  redis.call('ZADD', P .. 'x', expires, id)
  return {id, token, fn, attempts, expires,
    v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[13] or '0'}
end

-- Running counts change once per function per script, not once per invocation.
local function count_running(changes)
  local total = 0
  for fn, k in pairs(changes) do
    redis.call('HINCRBY', P .. 'c', fn, k)
    total = total + k
  end
  if total ~= 0 then redis.call('HINCRBY', P .. 'c', '*', total) end
end
"""

ENQUEUE = (
    _PRELUDE
    + """
-- ARGV: P, now, key window s, guard window s, count, then count * 13 item arguments.
local count = tonumber(ARGV[5])
local last = redis.call('INCRBY', P .. 'seq', count)
local answers, events, wake = {}, {}, false
local i = 6
for n = 1, count do
  local id, created, runnable
  i, id, created, runnable = enqueue_one(i, last - count + n, ARGV[3], ARGV[4], events)
  answers[#answers + 1] = id
  answers[#answers + 1] = created
  wake = wake or runnable
end
record(events)
if wake then redis.call('PUBLISH', P .. 'wake', '') end
return answers
"""
)

LEASE = (
    _PRELUDE
    + """
-- ARGV: P, now, n, nonce, account limit (-1: none), function count,
--       then per function: name, lease µs, reserved concurrency (-1: none),
--       at most this many in this call (-1: no limit of the caller's own).
local n = tonumber(ARGV[3])
local nonce = ARGV[4]
local account = tonumber(ARGV[5])
local nfn = tonumber(ARGV[6])

-- Leases that ran out: their dispatcher is gone; the invocation is runnable again.
local expired = redis.call('ZRANGEBYSCORE', P .. 'x', '-inf', NOW, 'LIMIT', 0, 256)
local recovered = {}
for _, id in ipairs(expired) do
  local h = P .. 'i:' .. id
  local v = redis.call('HMGET', h, 'f', 'q')
  redis.call('HSET', h, 't', '')
  redis.call('ZADD', P .. 'r:' .. v[1], v[2], id)
  recovered[v[1]] = (recovered[v[1]] or 0) - 1
end
if #expired > 0 then
  redis.call('ZREM', P .. 'x', unpack(expired))
  count_running(recovered)
end

local running = redis.call('HGETALL', P .. 'c')
local counts = {}
for j = 1, #running, 2 do counts[running[j]] = tonumber(running[j + 1]) end
local room = n
if account >= 0 then room = math.min(room, account - (counts['*'] or 0)) end

local candidates, lease_us, throttled = {}, {}, {}
for j = 0, nfn - 1 do
  local fn = ARGV[7 + 4 * j]
  lease_us[fn] = tonumber(ARGV[8 + 4 * j])
  local reserved = tonumber(ARGV[9 + 4 * j])
  local at_most = tonumber(ARGV[10 + 4 * j])
  local rkey, dkey = P .. 'r:' .. fn, P .. 'd:' .. fn
  local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', NOW, 'LIMIT', 0, n)
  for _, id in ipairs(due) do
    redis.call('ZADD', rkey, redis.call('HGET', P .. 'i:' .. id, 'q'), id)
  end
  if #due > 0 then redis.call('ZREM', dkey, unpack(due)) end
  local cap = n
  if reserved >= 0 then cap = math.min(cap, reserved - (counts[fn] or 0)) end
  if at_most >= 0 then cap = math.min(cap, at_most) end
  if cap > 0 then
    local got = redis.call('ZRANGE', rkey, 0, cap - 1, 'WITHSCORES')
    for k = 1, #got, 2 do
      candidates[#candidates + 1] = {tonumber(got[k + 1]), got[k], fn}
    end
  end
  if cap < n then
    local waiting = redis.call('ZCARD', rkey) - math.max(cap, 0)
    if waiting > 0 then throttled[fn] = math.min(waiting, n - math.max(cap, 0)) end
  end
end
table.sort(candidates, function(a, b) return a[1] < b[1] end)

local out, taken = {}, {}
for j, c in ipairs(candidates) do
  local id, fn = c[2], c[3]
  if j > room then
    if account >= 0 and j <= n then throttled[fn] = (throttled[fn] or 0) + 1 end
  else
    out[#out + 1] = take(id, fn, id .. '/' .. nonce .. j, NOW + lease_us[fn])
    taken[fn] = taken[fn] or {}
    table.insert(taken[fn], id)
  end
end
local started = {}
for fn, ids in pairs(taken) do
  redis.call('ZREM', P .. 'r:' .. fn, unpack(ids))
  started[fn] = #ids
end
if #out > 0 then count_running(started) end
local throttles = {}
for fn, k in pairs(throttled) do
  redis.call('HINCRBY', P .. 't', fn, k)
  throttles[#throttles + 1] = fn
  throttles[#throttles + 1] = k
end
return {out, throttles}
"""
)

SETTLE = (
    _PRELUDE
    + """
-- ARGV: P, now, key window s, guard window s, count, then per settlement:
--   token, "state|retry at µs|function errors|system errors|follow-on count|payload given
--   |chain lease µs" (state: pending | succeeded | failed; payload given: 0 | 1 | 2, 2: out
--   of line, the caller wrote it to P p:<token>; chain lease µs: 0, or lease the next of
--   the lane to the same owner for that long), history event, the new payload, the new
--   source ('' keeps it), follow-on count * 13 item arguments.
-- Answers the tokens still held; a lease row (after the token it follows) for each
-- invocation chained; 1 if a dispatcher may find work it could not before (something
-- became runnable, or a running invocation ended without one chained in its place).
local count = tonumber(ARGV[5])
local i = 6
local answers, events, wake, done, finished, chained, apart = {}, {}, false, {}, {}, {}, {}
for _ = 1, count do
  local token, event = ARGV[i], ARGV[i + 2]
  local state, retry_at, fe, se, follow, replaces, chain_us =
    string.match(ARGV[i + 1], '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)|([012])|(%d+)$')
  chain_us = tonumber(chain_us)
  follow = tonumber(follow)
  local new_p, new_s = replaces == '1' and ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local id, h, fn, lane, seq, was_apart = held(token)
  if replaces == '2' then
    -- Out of line: the invocation's key takes it if the lease holds, else it is dropped.
    if id then
      redis.call('RENAME', P .. 'p:' .. token, P .. 'p:' .. id)
      redis.call('HSET', h, 'p', '', 'x', '1')
    else
      redis.call('DEL', P .. 'p:' .. token)
    end
  end
  if id then
    answers[#answers + 1] = token
    done[#done + 1] = id
    finished[fn] = (finished[fn] or 0) - 1
    events[#events + 1] = event
    if state == 'pending' then
      redis.call('HSET', h, 't', '', 'fe', fe, 'se', se, 'av', retry_at)
      if new_p then
        redis.call('HSET', h, 'p', new_p, 'x', '0')
        if was_apart then redis.call('UNLINK', P .. 'p:' .. id) end  -- no longer its payload
      end
      if new_s ~= '' then redis.call('HSET', h, 's', new_s) end
      wake = schedule(id, fn, seq, retry_at) or wake
    else
      redis.call('DEL', h)
      -- Finished with the payload it had, out of line: its event does not say so.
      if replaces == '0' and was_apart then apart[#apart + 1] = id end
      if lane ~= '' then
        local lkey = P .. 'l:' .. lane
        redis.call('LPOP', lkey)
        local nxt = redis.call('LINDEX', lkey, 0)
        if nxt then
          local w = redis.call('HMGET', P .. 'i:' .. nxt, 'f', 'q', 'av')
          if chain_us > 0 and w[1] == fn and tonumber(w[3]) <= NOW then
            -- The lane's next, leased at once to the dispatcher that ran this one: it
            -- takes this one's place in the running counts.
            chained[#chained + 1] = token
            chained[#chained + 1] = take(nxt, fn, nxt .. '/' .. string.match(token, '/(.*)$')
              .. 'c', NOW + chain_us)
            finished[fn] = finished[fn] + 1
          else
            wake = schedule(nxt, w[1], w[2], w[3]) or wake
          end
        end
      end
    end
    if follow > 0 then
      local last = redis.call('INCRBY', P .. 'seq', follow)
      for n = 1, follow do
        local runnable
        i, _, _, runnable = enqueue_one(i, last - follow + n, ARGV[3], ARGV[4], events)
        wake = wake or runnable
      end
    end
  else
    for _ = 1, follow do
      drop_payload(i)
      i = i + 13
    end
  end
end
if #done > 0 then
  redis.call('ZREM', P .. 'x', unpack(done))
  count_running(finished)
end
record(events, apart)
if wake then redis.call('PUBLISH', P .. 'wake', '') end
local freed = 0
for _, k in pairs(finished) do
  if k < 0 then freed = 1 end
end
return {answers, chained, (wake or freed == 1) and 1 or 0}
"""
)

EXTEND = (
    _PRELUDE
    + """
-- ARGV: P, now, count, then per lease: token, new expiry µs.
local answers = {}
for j = 0, tonumber(ARGV[3]) - 1 do
  local token, expires = ARGV[4 + 2 * j], ARGV[5 + 2 * j]
  local id = held(token)
  if id then
    redis.call('ZADD', P .. 'x', expires, id)
    answers[#answers + 1] = token
  end
end
return answers
"""
)

RELEASE = (
    _PRELUDE
    + """
-- ARGV: P, now, then tokens. The attempt the lease was for is not counted.
local any, released = false, {}
for j = 3, #ARGV do
  local id, h, fn, _, seq = held(ARGV[j])
  if id then
    redis.call('HSET', h, 't', '')
    redis.call('HINCRBY', h, 'a', -1)
    redis.call('ZADD', P .. 'r:' .. fn, seq, id)
    redis.call('ZREM', P .. 'x', id)
    released[fn] = (released[fn] or 0) - 1
    any = true
  end
end
if any then
  count_running(released)
  redis.call('PUBLISH', P .. 'wake', '')
end
return any and 1 or 0
"""
)

NEXT_DUE = """
-- ARGV: P, then function names. The earliest delayed invocation or lease expiry (µs).
local P = ARGV[1]
local due = redis.call('ZRANGE', P .. 'x', 0, 0, 'WITHSCORES')[2]
local best = due and tonumber(due) or nil
for j = 2, #ARGV do
  local d = redis.call('ZRANGE', P .. 'd:' .. ARGV[j], 0, 0, 'WITHSCORES')[2]
  if d and (best == nil or tonumber(d) < best) then best = tonumber(d) end
end
return best or false
"""

TAKE_THROTTLES = """
-- ARGV: P. Hands over the throttle counts gathered since the last call.
local key = ARGV[1] .. 't'
local counts = redis.call('HGETALL', key)
redis.call('DEL', key)
return counts
"""

ADVANCE_HISTORY = """
-- ARGV: P, owner, last entry id written, trim threshold id, then ids of invocations
-- whose final state is written: their out-of-line payloads go.
-- Moves the history cursor and trims what is written, only while ``owner`` leads.
local P = ARGV[1]
if redis.call('GET', P .. 'hl') ~= ARGV[2] then return 0 end
redis.call('SET', P .. 'hc', ARGV[3])
redis.call('XTRIM', P .. 'h', 'MINID', ARGV[4])
for j = 5, #ARGV do redis.call('UNLINK', P .. 'p:' .. ARGV[j]) end
return 1
"""

LEAD = """
-- ARGV: P, owner, ttl ms. Takes or keeps the history writer's lease.
local key = ARGV[1] .. 'hl'
local current = redis.call('GET', key)
if current == false or current == ARGV[2] then
  redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

RESIGN = """
-- ARGV: P, owner. Gives the history writer's lease up, if ``owner`` holds it.
local key = ARGV[1] .. 'hl'
if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
return 0
"""
