-- Creates or replaces a bucket's policy (KEYS[1], a hash) and returns
-- {version, generation}. KEYS[2] is a counter that is never deleted, so
-- versions never repeat, even for a bucket deleted and created again. A
-- reset or a new bucket starts a new generation: keys of the old one are no
-- longer read and expire on their own.
-- The hash keeps the last 16 changes as `hist` ("version:a:p:changed_us;..."),
-- so a key untouched across several changes is carried over each in turn.
-- ARGV: policy text, reset (1/0), now_us ('' : Redis TIME), rate a, rate p.
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local version = redis.call('INCR', KEYS[2])
local old = redis.call('HMGET', KEYS[1], 'gen', 'hist')
local gen, hist = old[1], old[2] or ''
if ARGV[2] == '1' or not gen then
  gen = version
  hist = ''
end
local entries = {}
for e in string.gmatch(hist, '[^;]+') do entries[#entries + 1] = e end
entries[#entries + 1] = string.format('%d:%s:%s:%d', version, ARGV[4], ARGV[5], now)
while #entries > 16 do table.remove(entries, 1) end
redis.call('HSET', KEYS[1], 'text', ARGV[1], 'version', version, 'gen', gen,
           'hist', table.concat(entries, ';'))
return {version, tonumber(gen)}
