-- Shared by every script of this folder (worker/schedule/scripts.py puts it first).

-- Give `n` admission places back to a client's field and to the total, never below zero, and note the time of
-- progress (worker/ordering/admission.py names the same fields: TOTAL and PROGRESS).
local function give_back(hash, field, n)
  for _, f in ipairs({field, 'total'}) do
    if redis.call('HINCRBY', hash, f, -n) < 0 then redis.call('HSET', hash, f, 0) end
  end
  redis.call('HSET', hash, 'progress', redis.call('TIME')[1])
end

-- A resource's own key, as worker/schedule/keys.py names it (`prefix` is RedisKeys.own_prefix).
local function own_key(prefix, key, part)
  return prefix .. key .. '}:' .. part
end

-- Count a job that leaves its queue (exactly once per job): its outcome, its latency, its group's progress and
-- its client's admission place. An empty outcome (an unknown or expired job) counts nothing. `unchanged` (a
-- patch that changed nothing) counts as applied, and as unchanged too.
local function count_leaving(counts, latency, unfinished, group_prefix, outcome, bucket, seconds, group, client)
  if outcome == '' then return end
  local outcomes = {outcome}
  if outcome == 'unchanged' then outcomes = {'applied', 'unchanged'} end
  for _, name in ipairs(outcomes) do
    redis.call('HINCRBY', counts, name, 1)
    if group ~= '' then redis.call('HINCRBY', group_prefix .. group, name, 1) end
  end
  redis.call('HINCRBY', latency, bucket, 1)
  redis.call('HINCRBYFLOAT', latency, 'sum', seconds)
  if client ~= '' then give_back(unfinished, client, 1) end
end

-- While Redis is out of sync with MongoDB (its marker gone: it lost data), an arriving job is held, in arrival
-- order, instead of queued: the restore queues the held ones after rebuilding every queue (finish_sync.lua).
local function held_unless_synced(synced, held, held_payloads, job, keys, payload)
  if redis.call('EXISTS', synced) == 1 then return false end
  redis.call('RPUSH', held, cjson.encode({id = job, keys = keys}))
  redis.call('HSET', held_payloads, job, payload)
  return true
end

-- Mark a key with jobs as owing a drain, unless a drain is owed already; true when this call marked it.
local function owe_drain(mark, offered)
  return redis.call('SET', mark, offered, 'NX') ~= false
end

-- Move the keys whose retry is due onto the ready list (at most 100 a call; the next call moves more).
local function promote_due(due, ready, now)
  local keys = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 100)
  for _, key in ipairs(keys) do
    redis.call('RPUSH', ready, key)
    redis.call('ZREM', due, key)
  end
end

-- Keep the copy of a resource's newest version: it only moves forward (a worker resumed after losing its lease
-- must not put back an older version than one already copied). True when kept.
local function remember_copy(copy, version, doc, seconds)
  if tonumber(version) < tonumber(redis.call('HGET', copy, 'v') or '0') then return 0 end
  redis.call('HSET', copy, 'v', version, 'doc', doc)
  redis.call('EXPIRE', copy, seconds)
  return 1
end
