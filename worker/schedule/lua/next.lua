-- One drain step of a key, in one round trip: take the lease (mode 'acquire') or check it ('renew'); take the
-- finished jobs off the head and count them (a job leaves its queue exactly once, so the counters move here);
-- then, if the queue is empty, release the lease and the key's mark (the drain ends in this same step), else
-- renew the lease and return up to `limit` next jobs with their payloads and the copy of the newest version.
-- More ARGV, per finished job: id, outcome, latency bucket, seconds, group, client field.
-- Reply: {-2} held by another (acquire), {-1} lease lost, {0} queue empty and released,
-- {1, copy, id, payload, id, payload, ...}.
local lease = KEYS[1]
local queue = KEYS[2]
local payloads = KEYS[3]
local copy = KEYS[4]
local counts = KEYS[5]
local latency = KEYS[6]
local unfinished = KEYS[7]
local mark = KEYS[8]
local active = KEYS[9]
local token = ARGV[1]
local lease_ms = ARGV[2]
local limit = ARGV[3]
local group_prefix = ARGV[4]
local mode = ARGV[5]
local key = ARGV[6]

if mode == 'acquire' then
  if not redis.call('SET', lease, token, 'NX', 'PX', lease_ms) then return {-2} end
elseif redis.call('GET', lease) ~= token then
  return {-1}
end
for i = 7, #ARGV - 5, 6 do
  local id = ARGV[i]
  if redis.call('LINDEX', queue, 0) == id then
    redis.call('LPOP', queue)
    redis.call('HDEL', payloads, id)
    count_leaving(counts, latency, unfinished, group_prefix, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5])
  end
end
if redis.call('LLEN', queue) == 0 then
  redis.call('DEL', lease, mark)
  redis.call('SREM', active, key)
  return {0}
end
redis.call('PEXPIRE', lease, lease_ms)
local reply = {1, redis.call('HGET', copy, 'doc')}
for _, id in ipairs(redis.call('LRANGE', queue, 0, tonumber(limit) - 1)) do
  table.insert(reply, id)
  table.insert(reply, redis.call('HGET', payloads, id))
end
return reply
