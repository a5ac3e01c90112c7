-- Cluster-wide count (Broker::count): KEYS cnt (hash node -> count of this key), nodes (set of
-- nodes holding counts), nodekeys (set of this node's keys); ARGV node, delta, key.
-- Returns 1 when the total over every node crossed zero with this change, else 0.
local before = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do before = before + tonumber(v) end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[1])
end
local after = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do after = after + tonumber(v) end
local delta = tonumber(ARGV[2])
if (delta > 0 and before <= 0 and after > 0) or (delta < 0 and before > 0 and after <= 0) then
  return 1
end
return 0
