-- History: KEYS meta, hist; ARGV create ('1'/'0'), new epoch, idle ttl ms, range start ('-',
-- '+' or '(<offset>-0'), count ('-1' = all, '0' = position only), reverse ('1'/'0').
-- Returns {top, epoch, id, data, id, data, ...}; {'0', ''} when there is no stream and
-- `create` is '0'.
-- `now` (server time, ms) is set by prelude.lua, which runs first.
local meta = redis.call('HMGET', KEYS[1], 'top', 'epoch')
local top, epoch = meta[1] or '0', meta[2]
if not epoch then
  if ARGV[1] ~= '1' then return {'0', ''} end
  epoch = ARGV[2]
  top = '0'
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif top == '0' and ARGV[1] == '1' and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
while true do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
  local dead = {}
  for _, e in ipairs(head) do
    if (tonumber(e[2][2]) or 0) > now then break end
    dead[#dead + 1] = e[1]
  end
  if #dead > 0 then redis.call('XDEL', KEYS[2], unpack(dead)) end
  if #dead < 64 then break end
end
local out = {top, epoch}
if ARGV[5] == '0' then return out end
local args
if ARGV[6] == '1' then
  args = {'XREVRANGE', KEYS[2], ARGV[4], '-'}
else
  args = {'XRANGE', KEYS[2], ARGV[4], '+'}
end
if ARGV[5] ~= '-1' then
  args[#args + 1] = 'COUNT'
  args[#args + 1] = ARGV[5]
end
for _, e in ipairs(redis.call(unpack(args))) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][4] or ''
end
return out
