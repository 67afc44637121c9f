-- A transaction joins every queue it touches in one step, so two transactions sharing keys stand in the same
-- order in all of them (no deadlock). More KEYS: (queue, mark) per key; more ARGV: the keys.
-- Reply: false when held (out of sync), else the keys that need an offer ({} when it was queued already).
local payloads = KEYS[1]
local active = KEYS[2]
local synced = KEYS[3]
local held = KEYS[4]
local held_payloads = KEYS[5]
local counts = KEYS[6]
local job = ARGV[1]
local payload = ARGV[2]
local offered = ARGV[3]

if redis.call('HEXISTS', payloads, job) == 1 then return {} end
local keys = {}
for i = 4, #ARGV do table.insert(keys, ARGV[i]) end
redis.call('HINCRBY', counts, 'accepted', 1)
if held_unless_synced(synced, held, held_payloads, job, keys, payload) then return false end
redis.call('HSET', payloads, job, payload)
local offer = {}
for n, key in ipairs(keys) do
  local queue, mark = KEYS[5 + 2 * n], KEYS[6 + 2 * n]  -- the pairs follow the 6 named keys
  redis.call('RPUSH', queue, job)
  redis.call('SADD', active, key)
  if owe_drain(mark, offered) then table.insert(offer, key) end
end
return offer
