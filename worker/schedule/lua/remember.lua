-- Keep a copy of a resource's newest version (worker/ordering/copies.py), unless a newer one is kept. Reply: 1
-- kept, 0 not (older).
local copy = KEYS[1]
local version = ARGV[1]
local doc = ARGV[2]
local seconds = ARGV[3]

return remember_copy(copy, version, doc, seconds)
