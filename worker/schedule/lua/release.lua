-- Give the lease up. Reply: 1 when jobs remain (the key keeps its mark: the caller offers it again), 0 when
-- the key is idle (its mark goes too).
local lease = KEYS[1]
local queue = KEYS[2]
local mark = KEYS[3]
local active = KEYS[4]
local token = ARGV[1]
local key = ARGV[2]

if redis.call('GET', lease) == token then redis.call('DEL', lease) end
if redis.call('LLEN', queue) > 0 then return 1 end
redis.call('DEL', mark)
redis.call('SREM', active, key)
return 0
