-- drip: the queue of waiting requests of one key (see decide.lua for the
-- list's entries), read or cancelled.
-- KEYS[1] policy hash, KEYS[2] the key's queue list, KEYS[3] its state.
-- ARGV[1] now_us ('' : Redis TIME), ARGV[2] 'list' or 'cancel', ARGV[3]
-- the id to cancel, ARGV[4] the policy's window count.
-- list: the live entries (leaves > now), oldest first, each as
--   enqueue_ms turn_ms (two doubles) and the id. cancel: 1 when the place
--   was given back, 0 otherwise (the entry, if live, is removed either way).
-- Or the status 'nobucket'.
local call = redis.call
if not call('HGET', KEYS[1], 'version') then return redis.status_reply('nobucket') end
local pack, unpack, floor = struct.pack, struct.unpack, math.floor
local now
if ARGV[1] == '' then
  local t = call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(ARGV[1])
end
local entries = call('LRANGE', KEYS[2], 0, -1)
if ARGV[2] == 'list' then
  local out = {}
  for _, raw in ipairs(entries) do
    local leaves, came, turn = unpack('<ddd', raw)
    if leaves > now then
      out[#out + 1] = pack('<dd', floor(came / 1000), floor(turn / 1000)) .. string.sub(raw, 57)
    end
  end
  return out
end
-- cancel
for _, raw in ipairs(entries) do
  local leaves, _, _, e, t, v, cost_t = unpack('<ddddddd', raw)
  if leaves > now and string.sub(raw, 57) == ARGV[3] then
    call('LREM', KEYS[2], 1, raw)
    if tonumber(ARGV[4]) > 0 then return 0 end
    local state = call('GET', KEYS[3])
    if not state then return 0 end
    local sv, se, st, x, al, rj, sa, sp = unpack('<dddddddd', state)
    -- Exact only while nothing was admitted behind it: the key still holds
    -- the water its admission left, written at that moment.
    if sv ~= v or se ~= e or st ~= t then return 0 end
    -- Its water starts cost_t ticks before the water it left.
    call('SET', KEYS[3], pack('<dddddddd', sv, math.max(0, se - cost_t), st, x, al, rj, sa, sp) ..
      string.sub(state, 65), 'KEEPTTL')
    return 1
  end
end
return 0
