-- The end of a claimed job (claim.lua): the copy of the version it wrote kept (when it wrote one; never
-- backwards, so also after the lease was lost), the job counted accepted and by its outcome (nothing when it has
-- none), its lease given up. If jobs arrived meanwhile, the key stays marked, offered now, and the caller offers
-- it (reply 1); else it is idle (reply 0). A lease lost meanwhile (expired, then taken) leaves the key to its new
-- holder (reply 0).
local lease = KEYS[1]
local queue = KEYS[2]
local mark = KEYS[3]
local active = KEYS[4]
local counts = KEYS[5]
local latency = KEYS[6]
local unfinished = KEYS[7]
local copy = KEYS[8]
local token = ARGV[1]
local key = ARGV[2]
local offered = ARGV[3]
local outcome = ARGV[4]
local bucket = ARGV[5]
local seconds = ARGV[6]
local version = ARGV[7]
local doc = ARGV[8]
local keep_seconds = ARGV[9]

if version ~= '' then remember_copy(copy, version, doc, keep_seconds) end
if outcome ~= '' then redis.call('HINCRBY', counts, 'accepted', 1) end
count_leaving(counts, latency, unfinished, '', outcome, bucket, seconds, '', '')
if redis.call('GET', lease) ~= token then return 0 end
redis.call('DEL', lease)
if redis.call('LLEN', queue) > 0 then
  redis.call('SET', mark, offered)
  return 1
end
redis.call('DEL', mark)
redis.call('SREM', active, key)
return 0
