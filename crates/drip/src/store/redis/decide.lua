-- drip's decision in Redis: the twin of crates/drip/src/core/decide.rs.
--
-- Lua numbers are doubles, exact for integers below 2^53. So no absolute
-- time is kept in nanoseconds: the state is relative to the moment it was
-- written. Per key (a hash at KEYS[2]):
--   e   water as ticks of 1/a ns ahead of time t (the core's tat - now)
--   t   when e was written, in microseconds (Redis TIME)
--   a,p the rate e is counted in (T = p/a ns), v the policy version
--   al,rj  counters (allowed, rejected)
--   w<period_ns>  a window's log: "rel:cost,rel:cost" with rel in ns from t
-- Everything below is relative to now: now is 0.
--
-- KEYS[1] policy hash (version; hist, read only after a change: see
-- configure.lua), KEYS[2] the key's state.
-- ARGV: version, cost, max_wait_ns (-1: check), now_us ('' : Redis TIME),
--       peek (1: report only, write nothing), mode (police|shape), a, p,
--       capacity, window count, then per window: limit, period_ns, granularity_ns.
-- Returns {outcome, wait_ns, queue_position, remaining, retry_after_ns,
--          reset_after_ns, water_ticks, allowed, rejected}, or {'nobucket'}
--          or {'stale'} when the caller's policy is not the stored one.

local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {'nobucket'} end
if version ~= ARGV[1] then return {'stale'} end

local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost, max_wait, peek = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5] == '1'
local shape = ARGV[6] == 'shape'
local a, p, cap = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local nwin = tonumber(ARGV[10])
local windows = {}
for i = 1, nwin do
  local b = 10 + (i - 1) * 3
  windows[i] = {limit = tonumber(ARGV[b + 1]), period = tonumber(ARGV[b + 2]),
                gran = tonumber(ARGV[b + 3])}
end

local function ceil_div(x, d) return math.ceil(x / d) end
-- Integers as exact decimal text (plain tostring would use %.14g).
local function int(x) return string.format('%d', x) end
-- ceil(r * n / d) for integers r < d <= 2^53 and n <= 2^53, exactly: r * n
-- may pass 2^53, so it is built bit by bit of n, keeping the remainder
-- below d (every intermediate stays an exact double).
local function mul_div_ceil(r, n, d)
  local bit = 1
  while bit * 2 <= n do bit = bit * 2 end
  local q, rem = 0, 0
  while bit >= 1 do
    q, rem = q * 2, rem * 2
    if rem >= d then q, rem = q + 1, rem - d end
    if n >= bit then
      n = n - bit
      if rem >= d - r then q, rem = q + 1, rem - (d - r) else rem = rem + r end
    end
    bit = bit / 2
  end
  if rem > 0 then q = q + 1 end
  return q
end

local function leak(excess, dt_us, rate_a)
  if excess <= 0 then return 0 end
  if dt_us <= 0 then return excess end
  -- Inexact only when larger than 2^53, and then surely more than excess.
  local leaked = dt_us * 1000 * rate_a
  if leaked >= excess then return 0 end
  return excess - leaked
end

-- Read the key, bring it to now, carrying it over if the policy changed.
local st = redis.call('HMGET', KEYS[2], 'e', 't', 'a', 'p', 'v', 'al', 'rj')
local excess, at = tonumber(st[1]) or 0, tonumber(st[2]) or now
local allowed, rejected = tonumber(st[6]) or 0, tonumber(st[7]) or 0
local changed = false
if st[5] and st[5] ~= version then
  -- The policy changed since this key was written: replay each later change
  -- in turn. The water leaks at the rate it was kept in until the change,
  -- then carries over, rounded up to the new tick: ceil(e * p / sp).
  local sv, sa, sp = tonumber(st[5]), tonumber(st[3]), tonumber(st[4])
  local hist = redis.call('HGET', KEYS[1], 'hist') or ''
  for v, ca, cp, ct in string.gmatch(hist, '(%d+):(%d+):(%d+):(%d+)') do
    if tonumber(v) > sv then
      local switch = math.max(at, tonumber(ct))
      excess = leak(excess, switch - at, sa)
      local na, np = tonumber(ca), tonumber(cp)
      local q = math.floor(excess / sp)
      excess = q * np + mul_div_ceil(excess - q * sp, np, sp)
      at, sa, sp = switch, na, np
    end
  end
  changed = true
end
excess = leak(excess, now - at, a)
local shift = (at - now) * 1000 -- ns to add to a stored rel to make it rel to now

-- Window logs, pruned: an entry stays while rel + period > 0.
local logs = {}
for i, w in ipairs(windows) do
  local log = {used = 0}
  local raw = redis.call('HGET', KEYS[2], 'w' .. w.period)
  if raw then
    for rel, c in string.gmatch(raw, '(-?%d+):(%d+)') do
      local r, cn = tonumber(rel) + shift, tonumber(c)
      if r + w.period > 0 then
        log[#log + 1] = {r, cn}
        log.used = log.used + cn
      end
    end
  end
  logs[i] = log
end

local function remaining_and_reset(water)
  local room = cap * p - water
  local rem = 0
  if room > 0 then rem = math.floor(room / p) end
  local reset = 0
  if water > 0 then reset = ceil_div(water, a) end
  for i, w in ipairs(windows) do
    rem = math.min(rem, math.max(0, w.limit - logs[i].used))
    local n = #logs[i]
    if n > 0 then reset = math.max(reset, logs[i][n][1] + w.period) end
  end
  return rem, reset
end

local function finish(outcome, wait, qpos, retry)
  if not peek then
    local field = 'al'
    if outcome == 'A' then allowed = allowed + 1 else rejected = rejected + 1; field = 'rj' end
    if changed or not st[5] then
      -- A new key, or one carried over: write every field (and drop the
      -- logs of windows the policy no longer has).
      if changed then redis.call('DEL', KEYS[2]) end
      redis.call('HSET', KEYS[2], 'e', int(excess), 't', int(now), 'a', int(a), 'p', int(p),
                 'v', version, 'al', int(allowed), 'rj', int(rejected))
    elseif outcome == 'A' then
      -- Same policy: only the water, its time and the counter move.
      redis.call('HSET', KEYS[2], 'e', int(excess), 't', int(now), 'al', int(allowed))
    else
      redis.call('HINCRBY', KEYS[2], field, 1)
    end
    if outcome == 'A' or changed then
      for i, w in ipairs(windows) do
        local parts = {}
        for j, entry in ipairs(logs[i]) do parts[j] = int(entry[1]) .. ':' .. int(entry[2]) end
        if #parts > 0 then
          redis.call('HSET', KEYS[2], 'w' .. w.period, table.concat(parts, ','))
        else
          redis.call('HDEL', KEYS[2], 'w' .. w.period)
        end
      end
    end
  end
  local rem, reset = remaining_and_reset(excess)
  if not peek and ARGV[4] == '' then
    -- The key expires when it would be idle anyway (bucket empty, windows
    -- clear). Not on a test clock: Redis expires keys on its own time.
    redis.call('PEXPIRE', KEYS[2], math.max(1, ceil_div(reset, 1000000)))
  end
  return {outcome, wait, qpos, rem, retry, reset, excess, allowed, rejected}
end

-- Never: more than the policy can ever admit.
local max_cost = cap
for _, w in ipairs(windows) do max_cost = math.min(max_cost, w.limit) end
if peek or cost > max_cost then
  local outcome = 'X'
  if peek then outcome = 'A' end
  return finish(outcome, 0, 0, 0)
end

-- When the windows let the request leave (ns from now), not before the last
-- logged departure.
local ready = 0
for i, w in ipairs(windows) do
  local log = logs[i]
  local n = #log
  local last = 0
  if n > 0 then last = log[n][1] end
  local over = log.used + cost - w.limit
  local r = last
  if over > 0 then
    for j = 1, n do
      over = over - log[j][2]
      if over <= 0 then r = math.max(last, log[j][1] + w.period); break end
    end
  end
  ready = math.max(ready, r)
end
local ready_t = ready * a
local cost_t, cap_t = cost * p, cap * p

local admit, new_excess, depart, retry, qpos
if not shape then
  local go_t = math.max(0, ready_t, excess + cost_t - cap_t)
  local go = ceil_div(go_t, a)
  if max_wait < 0 then
    admit, retry = go_t <= 0, go
  else
    admit, retry = go <= max_wait, math.max(0, go - max_wait)
  end
  new_excess, depart, qpos = math.max(excess, go_t) + cost_t, go, 0
else
  local start_t = math.max(excess, ready_t)
  new_excess = start_t + cost_t
  local enter_t = math.max(0, new_excess - cap_t)
  depart = ceil_div(start_t, a)
  if max_wait < 0 then
    admit, retry = enter_t <= 0, ceil_div(enter_t, a)
  else
    admit, retry = depart <= max_wait, math.max(0, depart - max_wait)
  end
  qpos = ceil_div(excess, p) + 1
end
-- Beyond 2^53 ticks the water would no longer be exact: refuse such a far reservation.
if admit and new_excess > 9007199254740991 then admit = false end

if not admit then return finish('L', 0, qpos, retry) end
excess = new_excess
if cost > 0 then
  for i, w in ipairs(windows) do
    local log = logs[i]
    local n = #log
    if n > 0 and depart < log[n][1] + w.gran then
      log[n][1] = math.max(log[n][1], depart)
      log[n][2] = log[n][2] + cost
    else
      log[n + 1] = {depart, cost}
    end
    log.used = log.used + cost
  end
end
return finish('A', depart, qpos, 0)
