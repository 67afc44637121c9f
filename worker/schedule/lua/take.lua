-- A drainer takes items: the one given (popped by a blocking wait), then from the list up to a fair share of
-- what waits (what waits over the live drainers, at most `most`), after the retries now due. Their keys are
-- marked taken by this worker process, counted as drains, and remembered for a resume. With nothing to take:
-- mode 'pull' forgets the keys drained last; 'retire' also takes the drainer out of the count.
-- Reply: the items, one a line, or false.
local ready = KEYS[1]
local drainers = KEYS[2]
local items_key = KEYS[3]
local counts = KEYS[4]
local due = KEYS[5]
local drainer = ARGV[1]
local now = ARGV[2]
local taken = ARGV[3]
local prefix = ARGV[4]
local mode = ARGV[5]
local given = ARGV[6]
local most = ARGV[7]

promote_due(due, ready, now)
local items = {}
if given ~= '' then table.insert(items, given) end
local share = math.ceil(redis.call('LLEN', ready) / math.max(1, redis.call('ZCARD', drainers)))
local want = math.min(tonumber(most) - #items, share)
if #items == 0 then want = math.max(want, 1) end
if want > 0 then
  local popped = redis.call('LPOP', ready, want)
  if popped then for _, item in ipairs(popped) do table.insert(items, item) end end
end
if #items == 0 then
  redis.call('HDEL', items_key, drainer)
  if mode == 'retire' then
    redis.call('ZREM', drainers, drainer)
  else
    redis.call('ZADD', drainers, now, drainer)
  end
  return false
end
redis.call('ZADD', drainers, now, drainer)
local all = table.concat(items, '\n')
redis.call('HSET', items_key, drainer, all)
local n = 0
for key in string.gmatch(all, '%S+') do
  redis.call('SET', own_key(prefix, key, 'mark'), taken, 'XX')
  n = n + 1
end
redis.call('HINCRBY', counts, 'drains', n)
return all
