-- Rebuild one key's queue in acceptance order after Redis lost data: the jobs MongoDB holds in flight (already
-- sorted), then whatever the queue held that they do not include. Only while no drain holds the key.
-- More ARGV: (job id, payload) pairs. Reply: -1 a drain holds the key (try later), 0 empty, 1 offer it.
local queue = KEYS[1]
local mark = KEYS[2]
local active = KEYS[3]
local payloads = KEYS[4]
local lease = KEYS[5]
local key = ARGV[1]
local offered = ARGV[2]

if redis.call('EXISTS', lease) == 1 then return -1 end
local listed, order = {}, {}
for i = 3, #ARGV - 1, 2 do
  listed[ARGV[i]] = true
  table.insert(order, ARGV[i])
  redis.call('HSET', payloads, ARGV[i], ARGV[i + 1])
end
for _, id in ipairs(redis.call('LRANGE', queue, 0, -1)) do
  if not listed[id] then table.insert(order, id) end
end
redis.call('DEL', queue)
for _, id in ipairs(order) do redis.call('RPUSH', queue, id) end
if #order == 0 then return 0 end
redis.call('SADD', active, key)
redis.call('SET', mark, offered)
return 1
