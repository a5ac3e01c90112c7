-- Keeps a never-published stream alive: KEYS meta; ARGV ttl ms.
-- `now` (server time, ms) is set by prelude.lua, which runs first.
if redis.call('HGET', KEYS[1], 'top') == '0'
    and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return now
