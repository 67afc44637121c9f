-- A synchronous request applies its own job when its key is idle (worker/submission/direct.py): the realm in
-- sync, nothing queued, no drain owed, no lease. Then the request takes the lease and marks the key offered, so
-- that jobs arriving meanwhile queue behind it without an offer of their own (`settle` offers them). Reply: {0}
-- not claimed (the job goes through the queue), or {1, copy of the newest version}.
local lease = KEYS[1]
local queue = KEYS[2]
local mark = KEYS[3]
local synced = KEYS[4]
local copy = KEYS[5]
local token = ARGV[1]
local lease_ms = ARGV[2]
local offered = ARGV[3]

if redis.call('EXISTS', synced) == 0 or redis.call('LLEN', queue) > 0 or redis.call('EXISTS', lease) == 1 then
  return {0}
end
if not owe_drain(mark, offered) then return {0} end
redis.call('SET', lease, token, 'PX', lease_ms)
return {1, redis.call('HGET', copy, 'doc')}
