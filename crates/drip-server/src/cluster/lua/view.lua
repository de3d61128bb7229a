-- What /v1/cluster shows, read at one moment: {now_ms, lease or false,
-- id1, last_seen1, id2, last_seen2, ...}. KEYS: member set, lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now, redis.call('GET', KEYS[2])}
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members do out[#out + 1] = members[i] end
return out
