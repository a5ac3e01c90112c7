-- Publish: KEYS meta, hist[, idem]; ARGV pub/sub channel, data, size ('0' = no history),
-- ttl ms, meta ttl ms, new epoch, idempotency window ms. Returns {suppressed, offset, epoch}.
-- Nothing after the first write can fail (arguments are checked by the caller).
-- `now` (server time, ms) is set by prelude.lua, which runs first.
local idem = KEYS[3]
if idem then
  local prev = redis.call('GET', idem)
  if prev then
    local o, e = string.match(prev, '^(%d+) (.*)$')
    return {'1', o or '0', e or ''}
  end
end
local offset, epoch = '0', ''
if ARGV[3] ~= '0' then
  epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then
    epoch = ARGV[6]
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  end
  offset = string.format('%.0f', redis.call('HINCRBY', KEYS[1], 'top', 1))
  local expires = string.format('%.0f', now + tonumber(ARGV[4]))
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'x', expires, 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], 'p' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2])
if idem and ARGV[7] ~= '0' then
  redis.call('SET', idem, offset .. ' ' .. epoch, 'PX', ARGV[7])
end
return {'0', offset, epoch}
