-- A drain of the key failed: it joins the ready list again when `due` comes (offer.lua and take.lua move it),
-- marked retrying until then. Only a key that still owes a drain (a mark) is scheduled.
local mark = KEYS[1]
local due = KEYS[2]
local key = ARGV[1]
local retrying = ARGV[2]
local at = ARGV[3]

if redis.call('EXISTS', mark) == 0 then return 0 end
redis.call('SET', mark, retrying)
redis.call('ZADD', due, at, key)
return 1
