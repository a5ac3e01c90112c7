-- Drops the counts of nodes whose heartbeat key expired (Broker::sweep_counts): KEYS nodes (set
-- of nodes holding counts); ARGV the count key prefix (P:cnt:), the node-keys prefix
-- (P:cntnode:), the heartbeat prefix (P:alive:). Returns the keys whose totals fell to zero;
-- being one script, each is returned to one caller only.
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[3] .. node) == 0 then
    local nk = ARGV[2] .. node
    for _, key in ipairs(redis.call('SMEMBERS', nk)) do
      local ck = ARGV[1] .. key
      if redis.call('HDEL', ck, node) == 1 and redis.call('HLEN', ck) == 0 then
        table.insert(out, key)
      end
    end
    redis.call('DEL', nk)
    redis.call('SREM', KEYS[1], node)
  end
end
return out
