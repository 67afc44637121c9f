-- Step aside: a transaction heads this queue but cannot run yet. The key keeps its jobs but loses its lease and
-- its mark (parked); whoever completes the transaction, or the reconciler, offers it again.
local lease = KEYS[1]
local mark = KEYS[2]
local token = ARGV[1]

if redis.call('GET', lease) == token then redis.call('DEL', lease) end
redis.call('DEL', mark)
return 1
