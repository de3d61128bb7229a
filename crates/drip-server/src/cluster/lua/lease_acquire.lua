-- Takes the leader lease (KEYS[1]) if nobody holds it: set-if-absent with
-- an expiry of ARGV[2] ms. Its value is "TOKEN NODE_ID"; TOKEN comes from
-- the counter KEYS[2] and is above ARGV[3] (the highest token the caller
-- has seen), so fencing tokens keep growing even if Redis lost the counter.
-- Returns {token, value} when taken, {0, holder's value} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local token = redis.call('INCR', KEYS[2])
local seen = tonumber(ARGV[3])
if token <= seen then
  token = seen + 1
  redis.call('SET', KEYS[2], token)
end
local value = token .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {token, value}
