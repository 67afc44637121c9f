-- A job arrives on its key: queued (and counted accepted), or held while Redis is out of sync; a job already
-- queued is not queued twice. Reply: -1 held, 0 queued behind a drain already owed, 1 queued on an idle key
-- (the caller offers it), 2 already queued (nothing done).
local queue = KEYS[1]
local mark = KEYS[2]
local active = KEYS[3]
local payloads = KEYS[4]
local synced = KEYS[5]
local held = KEYS[6]
local held_payloads = KEYS[7]
local counts = KEYS[8]
local key = ARGV[1]
local offered = ARGV[2]
local job = ARGV[3]
local payload = ARGV[4]

if redis.call('HEXISTS', payloads, job) == 1 then return 2 end
if held_unless_synced(synced, held, held_payloads, job, {key}, payload) then
  redis.call('HINCRBY', counts, 'accepted', 1)
  return -1
end
redis.call('HSET', payloads, job, payload)
redis.call('RPUSH', queue, job)
redis.call('SADD', active, key)
redis.call('HINCRBY', counts, 'accepted', 1)
if owe_drain(mark, offered) then return 1 end
return 0
