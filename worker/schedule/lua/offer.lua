-- Offer items (a key, or a transaction's keys joined by spaces) to the drainers, after the retries now due;
-- name new drainers while items wait and fewer than `cap` live (never more than items waiting): the caller
-- sends one Celery message per name. Reply: the new drainers' names.
local ready = KEYS[1]
local drainers = KEYS[2]
local seq = KEYS[3]
local due = KEYS[4]
local now = ARGV[1]
local stale_before = ARGV[2]
local cap = ARGV[3]

promote_due(due, ready, now)
for i = 4, #ARGV do redis.call('RPUSH', ready, ARGV[i]) end
local waiting = redis.call('LLEN', ready)
if waiting == 0 then return {} end
redis.call('ZREMRANGEBYSCORE', drainers, '-inf', '(' .. stale_before)
local want = math.min(tonumber(cap) - redis.call('ZCARD', drainers), waiting)
local names = {}
for _ = 1, want do
  local name = 'd' .. redis.call('INCR', seq)
  redis.call('ZADD', drainers, now, name)
  table.insert(names, name)
end
return names
