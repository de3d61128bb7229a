-- A node's heartbeat: its record (KEYS[2], a JSON string that expires
-- after ARGV[3] ms unless refreshed) and its last-seen time, Redis TIME in
-- ms, as its score in the member set (KEYS[1]). ARGV: id, record, ttl_ms.
-- Returns the time written.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return now
