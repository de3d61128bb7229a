-- The leader writes back a configuration Redis lost, fenced by its token:
-- KEYS[3] keeps the highest token that wrote to this bucket, and a lower
-- one is refused (a paused former leader). KEYS[1] policy hash, KEYS[2] the
-- bucket's version counter. ARGV: token, version, generation, policy text
-- ('' for a deletion: only the counter is restored, so no older
-- configuration can come back), rate a, rate p.
-- Returns -1 refused, 0 nothing lost (the counter is at or past the
-- version), 1 configuration restored, 2 deletion's version restored.
local token = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if token < fence then return -1 end
redis.call('SET', KEYS[3], token)
local v = tonumber(ARGV[2])
local have = tonumber(redis.call('GET', KEYS[2]) or '0')
if have >= v then return 0 end
redis.call('SET', KEYS[2], v)
if ARGV[4] == '' then return 2 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], 'text', ARGV[4], 'version', v, 'gen', ARGV[3],
           'hist', string.format('%d:%s:%s:%d', v, ARGV[5], ARGV[6], now))
return 1
