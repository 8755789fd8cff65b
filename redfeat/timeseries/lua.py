"""Server-side steps of a series. Each is atomic; each documents its KEYS and ARGV.

State hash fields (keys.series): ``gen`` (the definition's generation, see
SeriesSpec.gen), ``newest`` (ms of the newest point), ``ver`` (bumped by
every write), ``hgen`` (bumped when the head is rewritten or cut), ``sealed_last`` (ms of
the last point in a sealed chunk; head points are all newer), ``floor`` (ms of the oldest
point a count cap keeps: older points read as gone; it only moves forward, since adding
points can only move the N-th newest later).

Tiles (one hash per page of 128 buckets, field = slot in the page) are 60 bytes,
little-endian ``<IddddddII``: count, sum, m2 (sum of squared deviations from the bucket
mean), min, max, first, last, first and last offsets in ms from the bucket start. m2
instead of a raw sum of squares keeps the variance exact to the last bits when the mean is
large against the spread; both merge in one step (Chan et al.).
"""

from __future__ import annotations

# One tile merge for series rollups and window features (windows/spec.py RECORD): two
# partial aggregates of one bucket, the stored one and the incoming one, become one (Chan
# et al. for m2). Ties: an incoming tile whose first event is at the same offset as the
# stored first keeps the stored one (it was recorded first); an incoming last at the same
# offset as the stored last wins (it was recorded last). So among events at one
# millisecond, the order they were recorded in decides first and last, as pandas'
# resample().first()/.last() go by input order.
TILE_MERGE = r"""
local FMT = '<IddddddII'
local function merge_tile(cur, t)
  local n1, s1, q1, mn1, mx1, f1, l1, fo1, lo1 = struct.unpack(FMT, cur)
  local n2, s2, q2, mn2, mx2, f2, l2, fo2, lo2 = struct.unpack(FMT, t)
  local nn = n1 + n2
  local d = s2 / n2 - s1 / n1
  if fo2 < fo1 then f1, fo1 = f2, fo2 end
  if lo2 >= lo1 then l1, lo1 = l2, lo2 end
  return struct.pack(FMT, nn, s1 + s2, q1 + q2 + d * d * n1 * n2 / nn,
    math.min(mn1, mn2), math.max(mx1, mx2), f1, l1, fo1, lo1)
end
"""

_MERGE = (
    TILE_MERGE
    + r"""
local function check_tiles(base, a)
  -- every tile group well formed and every stored tile it merges into readable, checked
  -- before the script's first write: Redis does not roll back a script that fails midway,
  -- so a failure after the raw write would leave points without their tiles
  local groups = tonumber(ARGV[a]); a = a + 1
  if not groups then return 'tile groups: count missing' end
  for g = 1, groups do
    local mode, slots, blob = ARGV[a], ARGV[a + 3], ARGV[a + 4]
    if (mode ~= 's' and mode ~= 'm' and mode ~= 'r') or not tonumber(ARGV[a + 1])
        or not slots or not blob or #blob ~= #slots * 60 or not KEYS[base + g] then
      return 'tile group ' .. g .. ' is malformed'
    end
    if mode == 'm' and #slots > 0 then
      local fields = {}
      for i = 1, #slots do fields[i] = string.byte(slots, i) end
      for _, cur in ipairs(redis.call('HMGET', KEYS[base + g], unpack(fields))) do
        if cur and #cur ~= 60 then
          return 'a stored tile in ' .. KEYS[base + g] .. ' is damaged (' .. #cur .. ' bytes)'
        end
      end
    end
    a = a + 5
  end
  return nil
end

local function apply_tiles(base, a)
  -- tile groups from ARGV[a]: count, then per group: mode ('s' set: buckets without a
  -- tile yet; 'm' merge; 'r' replace), page score, page member, slots (one byte per
  -- tile), tiles (60 bytes each); the group's page key is KEYS[base + group index]
  local groups = tonumber(ARGV[a]); a = a + 1
  for g = 1, groups do
    local mode, score, member = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local slots, blob = ARGV[a + 3], ARGV[a + 4]
    local key = KEYS[base + g]
    a = a + 5
    redis.call('ZADD', KEYS[base], score, member)
    if mode == 's' then
      local fv = {}
      for i = 1, #slots do
        fv[2 * i - 1] = string.byte(slots, i)
        fv[2 * i] = string.sub(blob, i * 60 - 59, i * 60)
      end
      redis.call('HSET', key, unpack(fv))
    else
      for i = 1, #slots do
        local slot, t = string.byte(slots, i), string.sub(blob, i * 60 - 59, i * 60)
        local cur = mode == 'm' and redis.call('HGET', key, slot)
        if cur then t = merge_tile(cur, t) end
        redis.call('HSET', key, slot, t)
      end
    end
  end
end
"""
)

# APPEND: a small batch of new points: newer than the newest point go to the end of the
# head; older ones are inserted into the head when they are newer than every sealed point,
# inside the retention, and not duplicates. Tiles are merged (exact: no point is replaced).
#
# KEYS[1] state hash, KEYS[2] head, KEYS[3] lock, KEYS[4] tile page index, KEYS[5..] pages
# ARGV[1] oldest ms of the batch, ARGV[2] newest ms, ARGV[3] packed points in time order,
# ARGV[4] raw retention ms, ARGV[5] the definition's generation ('' no check), then tile
# groups
# Returns {head bytes, ver}; {-1} when the batch needs the careful path (a duplicate, a
# point in a sealed chunk or past the retention); {-2} while a careful writer holds the
# lock (so that it cannot be starved); {-3} when the generation is not the state's (the
# series was deleted, recreated or redefined). Nothing was written in those cases.
APPEND = (
    _MERGE
    + r"""
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[5] then return {-3} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-2} end
local bad = check_tiles(4, 6)
if bad then return redis.error_reply(bad .. '; nothing was written') end
local st = redis.call('HMGET', KEYS[1], 'newest', 'sealed_last')
local lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2])
local len
if st[1] and lo <= tonumber(st[1]) then
  local newest = tonumber(st[1])
  if (st[2] and lo <= tonumber(st[2])) or lo < newest - tonumber(ARGV[4]) then return {-1} end
  -- insert each point at its place in the sorted head (binary search on 16-byte records);
  -- nothing is written before every point is known to be new
  local head, pts = redis.call('GET', KEYS[2]) or '', ARGV[3]
  local hn = #head / 16
  local pieces, prev = {}, 0
  for i = 0, #pts / 16 - 1 do
    local rec = string.sub(pts, i * 16 + 1, i * 16 + 16)
    local t = struct.unpack('<i8', rec)
    local a, b = prev, hn
    while a < b do
      local mid = math.floor((a + b) / 2)
      if struct.unpack('<i8', head, mid * 16 + 1) < t then a = mid + 1 else b = mid end
    end
    if a < hn and struct.unpack('<i8', head, a * 16 + 1) == t then return {-1} end
    pieces[#pieces + 1] = string.sub(head, prev * 16 + 1, a * 16)
    pieces[#pieces + 1] = rec
    prev = a
  end
  pieces[#pieces + 1] = string.sub(head, prev * 16 + 1)
  local merged = table.concat(pieces)
  redis.call('SET', KEYS[2], merged)
  len = #merged
  if hi > newest then redis.call('HSET', KEYS[1], 'newest', ARGV[2]) end
  redis.call('HINCRBY', KEYS[1], 'hgen', 1)  -- the head is no longer its old prefix + more
else
  len = redis.call('APPEND', KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[1], 'newest', ARGV[2])
end
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
apply_tiles(4, 6)
return {len, ver}
"""
)

# COMMIT: a write prepared by the client from state it read, applied only if that state is
# unchanged (compare-and-set), so concurrent writers never lose points.
#
# KEYS[1] state hash, KEYS[2] head, KEYS[3] chunk index, KEYS[4] chunks hash,
# KEYS[5] tile page index, KEYS[6..] tile pages
# ARGV[1] field to compare ('ver': nothing may have changed; 'hgen': only appends may have
#         happened, i.e. the head read is still its prefix), ARGV[2] expected value
# ARGV[3] head: 'k' keep, 's' set to ARGV[4], 'c' cut its first ARGV[4] bytes
# ARGV[5] newest ('' keep), ARGV[6] sealed_last ('' keep), ARGV[7] generation ('' none)
# ARGV[8] n chunks to delete, their first ms; then n chunks to add, (first ms, blob) each
# then tile groups (see apply_tiles)
# Returns 1, 0 when the state changed (nothing was written; read again and retry), or -3
# when the generation is not the state's (see APPEND).
COMMIT = (
    _MERGE
    + r"""
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[7] then return -3 end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if cur ~= ARGV[2] then return 0 end
local a = 8
local nd = tonumber(ARGV[a])
local bad = check_tiles(5, a + 1 + nd + 1 + 2 * tonumber(ARGV[a + 1 + nd]))
if bad then return redis.error_reply(bad .. '; nothing was written') end
local hm = ARGV[3]
if hm == 's' then
  if ARGV[4] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[4]) end
elseif hm == 'c' then
  local rest = redis.call('GETRANGE', KEYS[2], tonumber(ARGV[4]), -1)
  if rest == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], rest) end
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'newest', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'sealed_last', ARGV[6]) end
a = a + 1
for i = a, a + nd - 1 do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
a = a + nd
local na = tonumber(ARGV[a]); a = a + 1
for i = a, a + 2 * na - 1, 2 do
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
end
a = a + 2 * na
redis.call('HINCRBY', KEYS[1], 'ver', 1)
if hm ~= 'k' then redis.call('HINCRBY', KEYS[1], 'hgen', 1) end
apply_tiles(5, a)
return 1
"""
)

# READ: the raw points that may fall in [ARGV[1], ARGV[2]] (ms): the sealed chunk holding
# the start, every chunk starting inside, and the head; with the state for the CAS.
#
# KEYS[1] state hash, KEYS[2] head, KEYS[3] chunk index, KEYS[4] chunks hash
# ARGV[1] = '': no chunks, the head only
# Returns {newest or false, ver, hgen, sealed_last or false, head, floor or false,
#          first ms 1, chunk 1, ...}
READ = r"""
local st = redis.call('HMGET', KEYS[1], 'newest', 'ver', 'hgen', 'sealed_last', 'floor')
local out = {st[1], st[2] or '0', st[3] or '0', st[4], redis.call('GET', KEYS[2]) or '',
             st[5] or false}
if ARGV[1] == '' then return out end  -- the head only
local firsts = redis.call('ZREVRANGEBYSCORE', KEYS[3], ARGV[1], '-inf', 'LIMIT', 0, 1)
for _, s in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], ARGV[2])) do
  firsts[#firsts + 1] = s
end
for _, s in ipairs(firsts) do
  out[#out + 1] = s
  out[#out + 1] = redis.call('HGET', KEYS[4], s)
end
return out
"""

# TRIM: retention counted back from the newest point. Sealed chunks wholly older than
# newest - retention go (a chunk is wholly older when the next one starts at or before the
# cut); tile pages whose end is at or before their rollup's cut go. Only index ranges are
# walked, never the keyspace.
#
# Head records older than the cut go too (a sparse series may never fill a chunk), which
# bumps hgen and ver: a writer that read the old head retries.
#
# The raw cut is also the count floor when that is later (see CAP): ARGV[3] proposes a
# new floor, kept when it is later than the stored one.
#
# KEYS[1] state hash, KEYS[2] chunk index, KEYS[3] chunks hash, KEYS[4] tile page index,
# KEYS[5] head
# ARGV[1] the series key (tile pages are ARGV[1] .. ':t:' .. member: same hash tag)
# ARGV[2] raw retention ms, ARGV[3] floor proposed ('' none), then per rollup: bucket ms,
# retention ms
# Returns the number of chunks and pages removed (and 1 when the head was cut).
TRIM = r"""
local st = redis.call('HMGET', KEYS[1], 'newest', 'sealed_last', 'floor')
if not st[1] then return 0 end
local newest = tonumber(st[1])
local cut = newest - tonumber(ARGV[2])
local floor = tonumber(st[3] or '')
local proposed = tonumber(ARGV[3])
if proposed and (not floor or proposed > floor) then
  floor = proposed
  redis.call('HSET', KEYS[1], 'floor', ARGV[3])
end
if floor and floor > cut then cut = floor end
local gone = 0
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', cut))
-- every old-starting chunk but the newest is followed by one starting at or before the cut;
-- the newest may still hold points after the cut unless all sealed points are older
local drop = #old - 1
if st[2] and tonumber(st[2]) < cut then drop = #old end
for i = 1, drop do
  redis.call('ZREM', KEYS[2], old[i])
  redis.call('HDEL', KEYS[3], old[i])
  gone = gone + 1
end
local head = redis.call('GET', KEYS[5])
if head and #head >= 16 and struct.unpack('<i8', head, 1) < cut then
  -- records are in time order: binary search for the first one at or after the cut
  local a, b = 0, #head / 16
  while a < b do
    local mid = math.floor((a + b) / 2)
    if struct.unpack('<i8', head, mid * 16 + 1) < cut then a = mid + 1 else b = mid end
  end
  if a * 16 == #head then redis.call('DEL', KEYS[5]) else
    redis.call('SET', KEYS[5], string.sub(head, a * 16 + 1)) end
  redis.call('HINCRBY', KEYS[1], 'hgen', 1)
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
  gone = gone + 1
end
local cuts, maxcut = {}, nil
for i = 4, #ARGV, 2 do
  local b = tonumber(ARGV[i])
  local c = math.floor((newest - tonumber(ARGV[i + 1])) / b) * b
  cuts[ARGV[i]] = c
  if not maxcut or c > maxcut then maxcut = c end
end
if maxcut then
  local pages = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', maxcut),
                           'WITHSCORES')
  for i = 1, #pages, 2 do
    local member, score = pages[i], tonumber(pages[i + 1])
    local b = string.match(member, '^(%d+):')
    local c = cuts[b]
    if c == nil or score <= c then
      redis.call('UNLINK', ARGV[1] .. ':t:' .. member)
      redis.call('ZREM', KEYS[4], member)
      gone = gone + 1
    end
  end
end
return gone
"""

# CAP: where the count cap of a series (keep the newest ARGV[1] raw points) puts its floor.
# Points before the stored floor do not count. Sealed chunks are counted by their headers
# (uint32 n after the 2-byte magic) from the newest back; the chunk holding the boundary
# (or straddling the stored floor) goes back to the client, which decodes it.
#
# KEYS[1] state hash, KEYS[2] head, KEYS[3] chunk index, KEYS[4] chunks hash
# ARGV[1] the cap
# Returns {0}: no more points than the cap; {1, t}: the floor is t (found in the head, and
# stored here; older records leave the head with the next TRIM); {2, k, chunk, stored floor
# or ''}: the floor is the k-th newest point of that chunk at or after the stored floor (if
# it has k such points; else no more points than the cap): the client decodes it and
# stores the floor with TRIM.
CAP = r"""
local m = tonumber(ARGV[1])
local st = redis.call('HMGET', KEYS[1], 'newest', 'floor')
if not st[1] then return {0} end
local floor = tonumber(st[2] or '')
local head = redis.call('GET', KEYS[2]) or ''
local hn = #head / 16
local a = 0
if floor then
  local b = hn
  while a < b do
    local mid = math.floor((a + b) / 2)
    if struct.unpack('<i8', head, mid * 16 + 1) < floor then a = mid + 1 else b = mid end
  end
end
if hn - a >= m then
  local t = struct.unpack('<i8', head, (hn - m) * 16 + 1)
  if not floor or t > floor then redis.call('HSET', KEYS[1], 'floor', string.format('%.0f', t)) end
  return {1, t}
end
local left = m - (hn - a)
local start = 0
while true do
  local firsts = redis.call('ZREVRANGE', KEYS[3], start, start + 15)
  if #firsts == 0 then return {0} end
  for _, first in ipairs(firsts) do
    local blob = redis.call('HGET', KEYS[4], first)
    if blob then
      local n = struct.unpack('<I4', blob, 3)
      if n >= left or (floor and tonumber(first) < floor) then
        return {2, left, blob, st[2] or ''}
      end
      left = left - n
    end
  end
  start = start + 16
end
"""

# UNLOCK: release the careful writers' lock if it is still ours.
# KEYS[1] lock; ARGV[1] our token. Returns 1 if released.
UNLOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# -- alert rules (alerts.py) ------------------------------------------------------------

# KEYS: rules, state, ver. ARGV: name, rule JSON, replace flag, fresh state JSON.
# A new or replaced rule starts at "ok"; its version moves on, so an evaluator still
# holding the old state cannot write it over the new rule.
ALERT_ADD = r"""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and ARGV[3] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return 1
"""

# KEYS: rules, state, ver, history. ARGV: name, expected version, state JSON, channel,
# event JSON ('' = no transition), history maxlen, history field/value pairs...
ALERT_CAS = r"""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
if ARGV[5] == '' then return 1 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', unpack(fields))
redis.call('PUBLISH', ARGV[4], ARGV[5])
return id
"""
