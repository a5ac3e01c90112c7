-- The first lines of every script but presence_remove.lua: effects replication (needed
-- before Redis 7 for TIME ahead of writes) and `now`, the server's time in ms.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
