-- Read presence, dropping expired entries: KEYS pres, pexp. Returns HGETALL.
-- `now` (server time, ms) is set by prelude.lua, which runs first.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  for i = 1, #dead, 1000 do
    redis.call('HDEL', KEYS[1], unpack(dead, i, math.min(i + 999, #dead)))
  end
end
return redis.call('HGETALL', KEYS[1])
