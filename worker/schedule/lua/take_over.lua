-- Take a dead holder's lease, only if it still holds it. Reply: 1 taken, 0 not.
local lease = KEYS[1]
local previous = ARGV[1]
local token = ARGV[2]
local lease_ms = ARGV[3]

if redis.call('GET', lease) ~= previous then return 0 end
redis.call('SET', lease, token, 'PX', tonumber(lease_ms))
return 1
