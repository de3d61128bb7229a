-- Joint decisions: several requests, each on its own key of its own bucket,
-- admitted together or not at all, in one script call. The function `one`
-- above this driver is decide.lua itself (RedisStore wraps it), deciding
-- one request exactly as a lone call does.
--
-- KEYS: per part, its bucket's policy hash and its key's state.
-- ARGV: per part, the decide script's argument for that one request (now,
--   version, policy, cost, max_wait); then one character per part, '1'
--   for an advisory part (its refusal does not refuse the whole).
-- Each part is decided in turn (it writes its key); the key's value and
-- expiry are saved first. If any part refuses, the parts that admitted
-- are undone (only a binding part's refusal counts here) (their saved values put back, latest first), and each of them
-- answers a peek of its key as it stays. The refusing parts keep what a
-- lone refusal writes (their rejection count).
-- Returns {1 or 0 (admitted), the answers: six doubles per part}, or
-- {'stale' or 'nobucket', i} for part i, with nothing changed.

local n = #ARGV - 1
local advisory = ARGV[n + 1]
local saved, answers, admitted = {}, {}, {}
local refused = false

local function undo(upto)
  for i = upto, 1, -1 do
    if admitted[i] then
      local key, raw, ttl = KEYS[2 * i], saved[i][1], saved[i][2]
      if not raw then
        redis.call('DEL', key)
      elseif ttl > 0 then
        redis.call('SET', key, raw, 'PX', ttl)
      else
        redis.call('SET', key, raw)
      end
    end
  end
end

for i = 1, n do
  local key = KEYS[2 * i]
  saved[i] = {redis.call('GET', key), redis.call('PTTL', key)}
  local r = one({KEYS[2 * i - 1], key}, {ARGV[i]})
  if type(r) == 'table' then
    for j = 1, i - 1 do admitted[j] = true end
    undo(i - 1)
    return {r.ok, i}
  end
  answers[i] = r
  admitted[i] = struct.unpack('<d', r) == 1
  if not admitted[i] and string.sub(advisory, i, i) ~= '1' then refused = true end
end

if not refused then return {1, table.concat(answers)} end
undo(n)
for i = 1, n do
  if admitted[i] then
    local arg = ARGV[i]
    local peek = string.sub(arg, 1, #arg - 16) .. struct.pack('<dd', 0, -2)
    answers[i] = string.sub(one({KEYS[2 * i - 1], KEYS[2 * i]}, {peek}), 1, 48)
  end
end
return {0, table.concat(answers)}
