-- Give admission places back (jobs that were not accepted after all), never below zero.
local unfinished = KEYS[1]
local client = ARGV[1]
local n = ARGV[2]

give_back(unfinished, client, tonumber(n))
return 1
