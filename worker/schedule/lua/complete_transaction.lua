-- Take a transaction off all its queues (counted once) and release their leases. More KEYS: (lease, queue,
-- mark) per key; more ARGV: the keys. Reply: the keys that still have jobs (marked offered: the caller offers
-- them).
local payloads = KEYS[1]
local counts = KEYS[2]
local latency = KEYS[3]
local unfinished = KEYS[4]
local active = KEYS[5]
local token = ARGV[1]
local job = ARGV[2]
local outcome = ARGV[3]
local bucket = ARGV[4]
local seconds = ARGV[5]
local client = ARGV[6]
local offered = ARGV[7]

local more = {}
for i = 8, #ARGV do
  local n = i - 8
  local lease, queue, mark = KEYS[6 + 3 * n], KEYS[7 + 3 * n], KEYS[8 + 3 * n]  -- after the 5 named keys
  if redis.call('LINDEX', queue, 0) == job then redis.call('LPOP', queue) end
  if redis.call('GET', lease) == token then redis.call('DEL', lease) end
  if redis.call('LLEN', queue) > 0 then
    redis.call('SET', mark, offered)
    table.insert(more, ARGV[i])
  else
    redis.call('DEL', mark)
    redis.call('SREM', active, ARGV[i])
  end
end
if redis.call('HDEL', payloads, job) == 1 then
  count_leaving(counts, latency, unfinished, '', outcome, bucket, seconds, '', client)
end
return more
