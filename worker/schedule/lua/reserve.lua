-- Admit up to `wanted` more jobs of a client under both limits, in one atomic step (concurrent intakes cannot
-- overshoot). Reply: {granted, the client's unfinished jobs, all unfinished jobs} (before this grant).
local unfinished = KEYS[1]
local client = ARGV[1]
local wanted = ARGV[2]
local per_client = ARGV[3]
local total = ARGV[4]

local mine = tonumber(redis.call('HGET', unfinished, client) or '0')
local all = tonumber(redis.call('HGET', unfinished, 'total') or '0')
local grant = math.min(tonumber(wanted), tonumber(per_client) - mine, tonumber(total) - all)
if grant <= 0 then return {0, mine, all} end
if all <= 0 then redis.call('HSET', unfinished, 'progress', redis.call('TIME')[1]) end
redis.call('HINCRBY', unfinished, client, grant)
redis.call('HINCRBY', unfinished, 'total', grant)
return {grant, mine, all}
