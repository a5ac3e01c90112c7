-- Add presence: KEYS pres, pexp; ARGV client id, info, ttl ms.
-- `now` (server time, ms) is set by prelude.lua, which runs first.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local at = string.format('%.0f', tonumber(last[2]) or (now + tonumber(ARGV[3])))
redis.call('PEXPIREAT', KEYS[1], at)
redis.call('PEXPIREAT', KEYS[2], at)
return 1
