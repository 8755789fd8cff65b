"""Server-side Lua steps. Each one is atomic on the server; each documents its KEYS and ARGV.

Stored forms (see keys.py for names):

    latest key   string  = int64 BE event_time_us .. uint64 BE version_id .. payload
    history key  zset    score = event_time_us, member = uint64 BE version_id .. payload

Version ids are the server clock in microseconds at write time (so they also give
``written_at``), bumped past the entity's previous id so that they only grow. In a history
zset, versions with equal event time sort by member, i.e. by id: the last written wins ties.
"""

from __future__ import annotations

# WRITE: write versions of one or more entities, each as one atomic step.
#
# KEYS: per entity, its latest key, then (when the view keeps history) its history key.
# ARGV[1] keys per entity (1 or 2)
# ARGV[2] history mode: "n" none, "c" keep the newest COUNT, "d" keep DURATION back from newest
# ARGV[3] COUNT or DURATION_US (ignored for "n")
# ARGV[4] ttl in ms, 0 = none (latest key expires at event_time + ttl)
# ARGV[5] "0" plain; "1" compare-and-set: each entity carries the latest value it expects;
#         "2" backfill: each entity carries its written_at (us), used as the version id
# ARGV[6..] per entity: event_time_us, payload[, expected latest ("" = none) | written_at]
#
# Returns, per entity, {version id, status}: 0 written and latest moved, 1 written to history
# only (late data), 2 duplicate of an existing version (id of that version), 3 CAS mismatch.
WRITE = r"""
local per = tonumber(ARGV[1])
local hmode = ARGV[2]
local hval = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local cas = ARGV[5] == '1'
local backfill = ARGV[5] == '2'
local stride = (cas or backfill) and 3 or 2
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Read every latest value with one MGET and, without a ttl, write them back with one MSET:
-- one call per chunk instead of two per entity. The table keeps each key's current value
-- so that an entity appearing twice in a chunk sees its own earlier version.
local lkeys = {}
for k = 1, #KEYS, per do lkeys[#lkeys + 1] = KEYS[k] end
local fetched = redis.call('MGET', unpack(lkeys))
local latest = {}
for i, key in ipairs(lkeys) do
  if latest[key] == nil then latest[key] = fetched[i] end
end
local dirty, dirty_order = {}, {}
-- the last id given to each entity in this call: a late write does not move the latest
-- value, so the id it got must be remembered for the next write of the same entity
local lastid = {}
local out = {}
local a = 6
for k = 1, #KEYS, per do
  local lkey = KEYS[k]
  local hkey = nil
  if per == 2 then hkey = KEYS[k + 1] end
  local et_s = ARGV[a]
  local et = tonumber(et_s)
  local payload = ARGV[a + 1]
  local cur = latest[lkey]
  local id, status = nil, nil
  if cas and (cur or '') ~= ARGV[a + 2] then
    status = 3
    id = 0
  end
  local cur_et = nil
  if not status and cur then
    cur_et = struct.unpack('>l', cur)
    if cur_et == et and string.sub(cur, 17) == payload then
      id = struct.unpack('>L', cur, 9)
      status = 2
    end
  end
  if not status and hkey and ((cur_et ~= nil and et <= cur_et) or (not cur and ttl > 0)) then
    -- A retried write can only match a version at or before the latest, or one left in
    -- history after the latest key expired with the ttl.
    local same = redis.call('ZRANGEBYSCORE', hkey, et_s, et_s)
    for _, m in ipairs(same) do
      if string.sub(m, 9) == payload then
        id = struct.unpack('>L', m)
        status = 2
        break
      end
    end
  end
  if not status then
    if backfill then
      id = tonumber(ARGV[a + 2])
    else
      id = now
      local last = lastid[lkey]
      if not last and cur then last = struct.unpack('>L', cur, 9) end
      if last and last >= id then id = last + 1 end
    end
    lastid[lkey] = id
    if cur_et == nil or et >= cur_et then
      status = 0
      local value = struct.pack('>lL', et, id) .. payload
      if ttl > 0 then
        local exp = math.floor(et / 1000) + ttl
        if exp * 1000 > now then
          redis.call('SET', lkey, value, 'PXAT', exp)
          latest[lkey] = value
        else
          redis.call('DEL', lkey)
          latest[lkey] = false
        end
      else
        if not dirty[lkey] then dirty_order[#dirty_order + 1] = lkey end
        dirty[lkey] = value
        latest[lkey] = value
      end
    else
      status = 1
    end
    if hkey then
      redis.call('ZADD', hkey, et_s, struct.pack('>L', id) .. payload)
      if not cur and ttl == 0 then
        -- first version of a view without ttl: the history was empty, nothing to trim
      elseif hmode == 'c' then
        redis.call('ZREMRANGEBYRANK', hkey, 0, -hval - 1)
      else
        local newest = redis.call('ZRANGE', hkey, -1, -1, 'WITHSCORES')
        local cutoff = string.format('%.0f', tonumber(newest[2]) - hval)
        redis.call('ZREMRANGEBYSCORE', hkey, '-inf', '(' .. cutoff)
      end
    end
  end
  out[#out + 1] = id
  out[#out + 1] = status
  a = a + stride
end
if #dirty_order > 0 then
  local kv = {}
  for _, key in ipairs(dirty_order) do
    kv[#kv + 1] = key
    kv[#kv + 1] = dirty[key]
  end
  redis.call('MSET', unpack(kv))
end
return out
"""

# DUMP: every version of a chunk of entities of one view, as ONE msgpack array, so that the
# client decodes a whole chunk with a single call instead of one per version.
#
# KEYS: per entity, its history key (mode "h") or its latest key (mode "l")
# ARGV[1] mode; ARGV[2], ARGV[3] event time bounds in us for mode "h" ("-inf"/"+inf" ok)
#
# Returns msgpack: [[entity index (1-based), event_time_us, version_id, [values...]], ...]
# (the stored payload is already a msgpack array, so it is spliced in unchanged).
DUMP = r"""
local parts = {''}
local n = 0
local lo, hi = ARGV[2], ARGV[3]
for i, key in ipairs(KEYS) do
  local idx = '\206' .. struct.pack('>I4', i)
  if ARGV[1] == 'l' then
    local b = redis.call('GET', key)
    if b then
      n = n + 1
      parts[#parts + 1] = '\148' .. idx .. '\211' .. string.sub(b, 1, 8) .. '\207'
        .. string.sub(b, 9)
    end
  else
    local rows = redis.call('ZRANGEBYSCORE', key, lo, hi, 'WITHSCORES')
    for j = 1, #rows, 2 do
      local m = rows[j]
      n = n + 1
      parts[#parts + 1] = '\148' .. idx .. '\211' .. struct.pack('>l', tonumber(rows[j + 1]))
        .. '\207' .. m
    end
  end
end
parts[1] = '\221' .. struct.pack('>I4', n)
return table.concat(parts)
"""
