-- Hold every key of a transaction: only when it heads every queue and no other drain holds any of their
-- leases; then all leases are ours (or none are taken). More KEYS: (lease, queue) per key. Reply: 1 or 0.
local token = ARGV[1]
local job = ARGV[2]
local lease_ms = ARGV[3]

for i = 1, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i])
  if (holder and holder ~= token) or redis.call('LINDEX', KEYS[i + 1], 0) ~= job then return 0 end
end
for i = 1, #KEYS, 2 do redis.call('SET', KEYS[i], token, 'PX', lease_ms) end
return 1
