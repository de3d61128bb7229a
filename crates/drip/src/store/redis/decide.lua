-- drip's decision in Redis: the twin of crates/drip/src/core/decide.rs.
-- One call decides a batch of requests of one bucket, in order, each
-- exactly as if it had been decided alone at the same moment.
--
-- Lua numbers are doubles, exact for integers below 2^53. So no absolute
-- time is kept in nanoseconds: the state is relative to the moment it was
-- written. Numbers travel as little-endian doubles (struct.pack): no
-- decimal text to parse or print. Per key, one string (KEYS[2..]):
--   v e t x al rj a p   eight doubles:
--     v    the policy version the water is counted in, a p its rate
--          (T = p/a ns)
--     e    water as ticks of 1/a ns ahead of time t (the core's tat - now)
--     t    when e was written, in microseconds (Redis TIME)
--     x    when the key expires at the earliest (ms, Redis clock; 0 on a
--          test clock)
--     al rj  counters (allowed, rejected)
--   then per window with a non-empty log: period_ns, n, and n pairs
--     rel cost (rel in ns from t, oldest first).
-- Per key of a bucket that tracks its queue (shape mode), a list
-- (KEYS[n+2..2n+1], same hash tag) of the requests admitted and not yet
-- departed, oldest first, each seven doubles and the request id:
--   leaves_us now_us turn_us e t v c   when its water has leaked (it is
--   dropped from the head then), when it came, its turn, the key's water
--   e at t under version v right after its admission, and its cost c in
--   ticks (queue.lua gives the place back while the key still holds
--   exactly that water).
-- Everything below is relative to now: now is 0.
--
-- KEYS[1] policy hash (version; hist, read only after a change: see
-- configure.lua), KEYS[2..n+1] the requests' keys (one bucket: one slot).
-- ARGV[1], little-endian doubles (RedisStore): now_us (-1: Redis TIME),
--   the version, the policy: mode (0 police, 1 shape), a, p, capacity,
--   window count, counter retention (ms), then per window limit, period_ns, granularity_ns,
--   track (1: the queue is listed); then
--   per request cost, max_wait_ns (-1: check, -2: peek, which reports and
--   writes nothing, -3: count, which decides nothing and adds `cost`
--   refusals to the key's rejected counter: those the node's deny cache
--   refused without a call). When tracking, ARGV[2..n+1] the requests' ids.
-- Or, only for benchmarking tools that cannot send binary arguments
--   (redis-benchmark; fenced below as BENCHMARK TOOLS ONLY), ARGV[1] '' and
--   the same numbers as text from ARGV[2] (now_us '': Redis TIME; mode
--   police|shape).
--
-- Layout: parse the arguments; `decide`, the decision (core::decide); then
-- per key: read and carry over (core::carry_over), leak to now, prune the
-- window logs (WindowLog::prune), decide, remaining / reset_after (the
-- core's `remaining` and `reset_after`), write back, answer.
-- Few arguments and few tables: Redis builds KEYS and ARGV afresh on every
-- call, and a lone request (the common case) builds no result table.
-- Returns per request six doubles: outcome (1 admitted, 2 limited,
-- 3 exceeds), wait_ns, queue_position, remaining, retry_after_ns,
-- reset_after_ns; a peek adds water_ticks, allowed, rejected. Or the
-- status 'nobucket' or 'stale' when the caller's policy is not the stored
-- one (then nothing was decided).

local call = redis.call
local version = call('HGET', KEYS[1], 'version')
if not version then return redis.status_reply('nobucket') end

local pack, unpack, ceil, floor, max, min, format =
  struct.pack, struct.unpack, math.ceil, math.floor, math.max, math.min, string.format
local text = ARGV[1] == ''
local now, vn, shape, a, p, cap, nwin, keep_ms, reqs, rpos
local track = false
local windows -- only when there are windows
if not text then
  local mode, pos
  now, vn, mode, a, p, cap, nwin, keep_ms, pos = unpack('<dddddddd', ARGV[1])
  -- Arithmetic converts the text as tonumber would, without its call.
  if version + 0 ~= vn then return redis.status_reply('stale') end
  shape = mode == 1
  if nwin > 0 then windows = {} end
  for i = 1, nwin do
    local limit, period, gran
    limit, period, gran, pos = unpack('<ddd', ARGV[1], pos)
    windows[i] = {limit = limit, period = period, gran = gran}
  end
  local t
  t, pos = unpack('<d', ARGV[1], pos)
  track = t == 1
  reqs, rpos = ARGV[1], pos
else
  -- ==== BENCHMARK TOOLS ONLY (redis-benchmark cannot send binary
  -- arguments; RedisStore never takes this branch): the same arguments as
  -- text. ====
  if version ~= ARGV[2] then return redis.status_reply('stale') end
  vn = tonumber(version)
  now = ARGV[3] == '' and -1 or tonumber(ARGV[3])
  shape = ARGV[4] == 'shape'
  a, p, cap, nwin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  keep_ms = 0
  windows = {}
  for i = 1, nwin do
    local b = 8 + (i - 1) * 3
    windows[i] = {limit = tonumber(ARGV[b + 1]), period = tonumber(ARGV[b + 2]),
                  gran = tonumber(ARGV[b + 3])}
  end
  rpos = 9 + nwin * 3
  -- ==== end of BENCHMARK TOOLS ONLY ====
end
local test_clock = now >= 0
if not test_clock then
  local t = call('TIME')
  -- Arithmetic converts the texts as tonumber would, without its call.
  now = t[1] * 1000000 + t[2]
end
local now_ms = floor(now / 1000)
local max_cost = cap
for i = 1, nwin do max_cost = min(max_cost, windows[i].limit) end
local cap_t = cap * p
local hist -- the change history, read at the first key that needs it

-- The decision for one request, the twin of core::decide::decide and its
-- plan(), step by step in the same order. `excess` is the water now (the
-- core's tat - now, in ticks), `logs` the pruned window logs (changed in
-- place on admission). Returns outcome (1 admitted, 2 limited, 3 exceeds),
-- wait, queue position, retry and the water after the decision.
-- (One closure per script call, not per request.)
local function decide(excess, logs, cost, max_wait)
  -- decide: `req.cost > policy.max_cost()` -> Outcome::Exceeds.
  if cost > max_cost then return 3, 0, 0, 0, excess end

  -- decide: `window_ready`, the latest WindowLog::ready_at over the windows
  -- (ns from now; not before the last logged departure).
  local ready = 0
  for i = 1, nwin do
    local w = windows[i]
    local log = logs[i]
    local n = #log
    local last = 0
    if n > 0 then last = log[n][1] end
    local over = log.used + cost - w.limit
    local r = last
    if over > 0 then
      for j = 1, n do
        over = over - log[j][2]
        if over <= 0 then r = max(last, log[j][1] + w.period); break end
      end
    end
    ready = max(ready, r)
  end

  -- plan: ready_t, cost_t (cap_t is computed once per call).
  local ready_t = ready * a
  local cost_t = cost * p
  local admit, new_excess, depart, retry
  local qpos = 0
  if not shape then
    -- plan, Mode::Police: admitted at `go` when the bucket then has room.
    local go_t = max(0, ready_t, excess + cost_t - cap_t)
    local go = ceil(go_t / a)
    if max_wait < 0 then
      admit, retry = go_t <= 0, go
    else
      admit, retry = go <= max_wait, max(0, go - max_wait)
    end
    new_excess, depart = max(excess, go_t) + cost_t, go
  else
    -- plan, Mode::Shape: leaves when the water ahead has leaked (and the
    -- windows allow); must fit in the bucket when it joins the queue.
    local start_t = max(excess, ready_t)
    new_excess = start_t + cost_t
    local enter_t = max(0, new_excess - cap_t)
    depart = ceil(start_t / a)
    if max_wait < 0 then
      admit, retry = enter_t <= 0, ceil(enter_t / a)
    else
      admit, retry = depart <= max_wait, max(0, depart - max_wait)
    end
    qpos = ceil(excess / p) + 1
  end
  -- (Lua only) beyond 2^53 ticks the water would no longer be exact:
  -- refuse such a far reservation.
  if admit and new_excess > 9007199254740991 then admit = false end

  -- decide: `!plan.admit` -> Outcome::Limited, the state unchanged.
  if not admit then return 2, 0, qpos, retry, excess end

  -- decide: `state.tat = now_t + plan.excess`, then WindowLog::record of
  -- the departure in every window.
  if cost > 0 then
    for i = 1, nwin do
      local w = windows[i]
      local log = logs[i]
      local n = #log
      if n > 0 and depart < log[n][1] + w.gran then
        log[n][1] = max(log[n][1], depart)
        log[n][2] = log[n][2] + cost
      else
        log[n + 1] = {depart, cost}
      end
      log.used = log.used + cost
    end
  end
  return 1, depart, qpos, 0, new_excess
end

local nkeys = #KEYS - 1
if track then nkeys = nkeys / 2 end
local answers = nkeys > 1 and {} or nil -- each request's, for a batch
for k = 2, nkeys + 1 do
  local key = KEYS[k]
  local cost, max_wait
  if text then -- BENCHMARK TOOLS ONLY: text arguments
    cost, max_wait, rpos = tonumber(ARGV[rpos]), tonumber(ARGV[rpos + 1]), rpos + 2
  else
    cost, max_wait, rpos = unpack('<dd', reqs, rpos)
  end
  local peek = max_wait == -2
  local count = max_wait == -3

  -- Read the key, bring it to now, carrying it over if the policy changed
  -- (core::carry_over, once per later change).
  local raw = call('GET', key)
  local excess, at, x, allowed, rejected = 0, now, 0, 0, 0
  local fresh, changed = true, false
  if raw then
    local sv, sa, sp
    sv, excess, at, x, allowed, rejected, sa, sp = unpack('<dddddddd', raw)
    fresh = false
    if sv ~= vn then
      -- The policy changed since this key was written: replay each later
      -- change in turn. The water leaks at the rate it was kept in until
      -- the change, then carries over, rounded up to the new tick:
      -- ceil(e * p / sp). (The helpers are made only here: a closure
      -- costs an allocation on every call that makes it.)
      --
      -- ceil(r * n / d) for integers r < d <= 2^53 and n <= 2^53, exactly:
      -- r * n may pass 2^53, so it is built bit by bit of n, keeping the
      -- remainder below d (every intermediate stays an exact double).
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
      if not hist then hist = call('HGET', KEYS[1], 'hist') or '' end
      for v, ca, cp, ct in string.gmatch(hist, '(%d+):(%d+):(%d+):(%d+)') do
        if tonumber(v) > sv then
          local switch = max(at, tonumber(ct))
          excess = leak(excess, switch - at, sa)
          local na, np = tonumber(ca), tonumber(cp)
          local q = floor(excess / sp)
          excess = q * np + mul_div_ceil(excess - q * sp, np, sp)
          at, sa, sp = switch, na, np
        end
      end
      changed = true
    end
  end
  local before = excess -- as written, for a refusal under the same policy
  if excess > 0 and now > at then
    -- Inexact only when larger than 2^53, and then surely more than excess.
    local leaked = (now - at) * 1000 * a
    if leaked >= excess then excess = 0 else excess = excess - leaked end
  end

  -- Window logs, pruned (WindowLog::prune): an entry stays while
  -- rel + period > 0.
  local logs
  if nwin > 0 then
    logs = {}
    local stored = {}
    if raw then
      local wpos = 65
      while wpos <= #raw do
        local period, n
        period, n, wpos = unpack('<dd', raw, wpos)
        local entries = {}
        for j = 1, n do
          local rel, c
          rel, c, wpos = unpack('<dd', raw, wpos)
          entries[j] = {rel, c}
        end
        stored[period] = entries
      end
    end
    local shift = (at - now) * 1000 -- ns to add to a stored rel to make it rel to now
    for i = 1, nwin do
      local w = windows[i]
      local log = {used = 0}
      local s = stored[w.period]
      if s then
        for _, entry in ipairs(s) do
          local r, cn = entry[1] + shift, entry[2]
          if r + w.period > 0 then
            log[#log + 1] = {r, cn}
            log.used = log.used + cn
          end
        end
      end
      logs[i] = log
    end
  end

  -- The decision (core::decide::decide; see `decide` above).
  local outcome, wait, qpos, retry = 1, 0, 0, 0
  if count then
    outcome = 2 -- written back as a refusal: the state unchanged
  elseif not peek then
    outcome, wait, qpos, retry, excess = decide(excess, logs, cost, max_wait)
  end

  -- Remaining units now, and when every limit is back to full (the core's
  -- `remaining` and `reset_after`).
  local room = cap_t - excess
  local rem = 0
  if room > 0 then rem = floor(room / p) end
  local reset = 0
  if excess > 0 then reset = ceil(excess / a) end
  for i = 1, nwin do
    local w = windows[i]
    local log = logs[i]
    rem = min(rem, max(0, w.limit - log.used))
    local n = #log
    if n > 0 then reset = max(reset, log[n][1] + w.period) end
  end

  if not peek then
    if outcome == 1 then
      allowed = allowed + 1
    elseif count then
      rejected = rejected + cost
    else
      rejected = rejected + 1
    end
    -- The key expires when it would be idle anyway (bucket empty, windows
    -- clear) and its counters' retention has passed; not on a test clock
    -- (Redis expires keys on its own time). Its expiry only moves later:
    -- when the one set already covers this state, it is kept.
    local expiry, keep = 0, false
    if not test_clock then
      expiry = now_ms + max(1, ceil(reset / 1000000), keep_ms)
      if not (fresh or changed) and expiry <= x then expiry, keep = x, true end
    end
    local value
    if outcome == 1 or changed or fresh then
      value = pack('<dddddddd', vn, excess, now, expiry, allowed, rejected, a, p)
      if nwin > 0 then
        local parts = {value}
        for i = 1, nwin do
          local w = windows[i]
          local log = logs[i]
          if #log > 0 then
            parts[#parts + 1] = pack('<dd', w.period, #log)
            for _, entry in ipairs(log) do parts[#parts + 1] = pack('<dd', entry[1], entry[2]) end
          end
        end
        value = table.concat(parts)
      end
    else
      -- Refused under the same policy: only the counter moves (the water,
      -- its time and the logs stay as written).
      value = pack('<dddddddd', vn, before, at, expiry, allowed, rejected, a, p)
      if nwin > 0 then value = value .. string.sub(raw, 65) end
    end
    if track and outcome == 1 then
      -- List it (the queue key beside the state key): drop the departed
      -- heads, append unless the list holds `cap` entries, and let the
      -- list expire when its last entry's water has leaked.
      local qkey = KEYS[k + nkeys]
      while true do
        local head = call('LINDEX', qkey, 0)
        if not head or unpack('<d', head) > now then break end
        call('LPOP', qkey)
      end
      local leaves = now + ceil((wait + ceil(cost * p / a)) / 1000)
      if call('LLEN', qkey) < cap then
        call('RPUSH', qkey, pack('<ddddddd', leaves, now, now + wait / 1000, excess, now, vn, cost * p) .. (ARGV[k] or ''))
      end
      if not test_clock then
        call('PEXPIREAT', qkey, format('%d', ceil(leaves / 1000) + 1))
      end
    end
    if test_clock then
      call('SET', key, value)
    elseif keep then
      call('SET', key, value, 'KEEPTTL')
    else
      -- PX from Redis' clock at the SET, not before this call's TIME: the
      -- key lives at least to `expiry`. As text: Redis would print a number
      -- with '%.17g', several times the cost of '%d' (and short texts such
      -- as '1' are already Lua strings, not made anew).
      call('SET', key, value, 'PX', format('%d', expiry - now_ms))
    end
  end

  local answer
  if peek then
    answer = pack('<ddddddddd', outcome, wait, qpos, rem, retry, reset, excess, allowed, rejected)
  else
    answer = pack('<dddddd', outcome, wait, qpos, rem, retry, reset)
  end
  if not answers then return answer end
  answers[k - 1] = answer
end
return table.concat(answers)
