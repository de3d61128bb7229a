-- The leader's chore, fenced: only while the lease (KEYS[1]) holds the
-- caller's "TOKEN NODE_ID" (ARGV[1]), forget members (KEYS[2]) not seen for
-- ARGV[2] ms. Returns how many were forgotten, or -1 (refused: the caller
-- is no longer the leader and did nothing).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
