-- Forget this process's "taken" mark on a key, only if the mark is still ours.
local mark = KEYS[1]
local taken_prefix = ARGV[1]

local current = redis.call('GET', mark)
if current and string.sub(current, 1, string.len(taken_prefix)) == taken_prefix then redis.call('DEL', mark) end
return 1
