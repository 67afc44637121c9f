-- The end of a restore: append the held jobs not queued yet, in arrival order, and set the marker, in one
-- step. Reply: the keys that need an offer.
local payloads = KEYS[1]
local active = KEYS[2]
local synced = KEYS[3]
local held = KEYS[4]
local held_payloads = KEYS[5]
local offered = ARGV[1]
local prefix = ARGV[2]

local offer = {}
for _, item in ipairs(redis.call('LRANGE', held, 0, -1)) do
  local job = cjson.decode(item)
  local payload = redis.call('HGET', held_payloads, job.id)
  if payload and redis.call('HEXISTS', payloads, job.id) == 0 then
    redis.call('HSET', payloads, job.id, payload)
    for _, key in ipairs(job.keys) do
      redis.call('RPUSH', own_key(prefix, key, 'q'), job.id)
      redis.call('SADD', active, key)
      if owe_drain(own_key(prefix, key, 'mark'), offered) then table.insert(offer, key) end
    end
  end
end
redis.call('DEL', held, held_payloads)
redis.call('SET', synced, 1)
return offer
