-- The leader's heartbeat chore, fenced: only while the lease (KEYS[1])
-- still holds the caller's "TOKEN NODE_ID" (ARGV[1]), extend it by ARGV[3]
-- ms (compare-and-extend) and forget members (KEYS[2]) not seen for
-- ARGV[2] ms. Returns how many were forgotten, or -1: refused, the caller
-- is no longer the leader and did nothing. (Renewal and chore are one
-- script, so a leader that was paused learns it lost the lease from the
-- refusal of its next chore, wherever the pause caught it.)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
