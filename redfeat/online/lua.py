"""Server-side Lua steps. Each one is atomic on the server; each documents its KEYS and ARGV.

Stored forms (see keys.py for names):

    latest key   string  = int64 BE event_time_us .. uint64 BE version_id .. payload
    history key  zset    score = event_time_us,
                         member = 0xCF .. uint64 BE version_id .. payload

A history member is two msgpack values back to back (0xCF is msgpack's uint64 marker, the
payload a msgpack array), so many members joined decode in one call (offline.dump.Dumper).

Version ids are the server clock in microseconds at write time (so they also give
``written_at``), bumped past the entity's previous id so that they only grow. In a history
zset, versions with equal event time sort by member, i.e. by id: the last written wins ties.
"""

from __future__ import annotations

# WRITE: write versions of one or more entities, each as one atomic step.
#
# KEYS: per entity, its latest key, then (when the view keeps history) its history key;
#       last, the view's change-feed stream.
# ARGV[1] keys per entity (1 or 2)
# ARGV[2] history mode: "n" none, "c" keep the newest COUNT, "d" keep DURATION back from newest
# ARGV[3] COUNT or DURATION_US (ignored for "n")
# ARGV[4] ttl in ms, 0 = none (latest key expires at event_time + ttl)
# ARGV[5] "0" plain; "1" compare-and-set: each entity carries the latest value it expects;
#         "2" backfill: each entity carries its written_at (us), used as the version id
# ARGV[6] change feed: "" = no events, else the channel to PUBLISH to
# ARGV[7] stream cap (XADD MAXLEN ~), ARGV[8] event kind ("w"), ARGV[9] changed fields
#         (comma-joined names), ARGV[10] the call's escaped entity ids joined by "\n"
# ARGV[11..] per entity: event_time_us, payload[, expected latest ("" = none) | written_at]
#
# Events: every new version of the call goes into ONE stream entry and ONE message (a chunk
# of up to 256 entities), so the feed costs two commands per call, not two per entity:
#   stream entry {k: kind, f: fields, e: escaped entity ids joined by "\n",
#                 v: int64 BE (version id, event_time_us) per id; version id 0: the write
#                 made no new version (a retry, or late data dropped)}
#   message      msgpack [entry id, kind, fields, ids, pairs], each as bin
# Escaped ids never contain a newline (keys.py), so the join is unambiguous.
#
# Returns, per entity, {version id, status}: 0 written and latest moved, 1 written to history
# only (late data), 2 duplicate of an existing version (id of that version), 3 CAS mismatch,
# 4 late data for a view without history: dropped (id 0).
WRITE = r"""
-- msgpack bin32: the ids and pairs are bytes, not text
local function bin(s) return '\198' .. struct.pack('>I4', #s) .. s end
local per = tonumber(ARGV[1])
local hmode = ARGV[2]
local hval = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local cas = ARGV[5] == '1'
local backfill = ARGV[5] == '2'
local stride = (cas or backfill) and 3 or 2
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local channel = ARGV[6]
local ZERO16 = string.rep('\0', 16)
local ev_new = 0
local nkeys = #KEYS - 1  -- the stream key comes last
local ev_pairs = {}
-- Read every latest value with one MGET and, without a ttl, write them back with one MSET:
-- one call per chunk instead of two per entity. The table keeps each key's current value
-- so that an entity appearing twice in a chunk sees its own earlier version.
local lkeys = {}
for k = 1, nkeys, per do lkeys[#lkeys + 1] = KEYS[k] end
local fetched = redis.call('MGET', unpack(lkeys))
local latest = {}
for i, key in ipairs(lkeys) do
  if latest[key] == nil then latest[key] = fetched[i] end
end
local dirty, dirty_order = {}, {}
-- the last id given to each entity in this call: a late write does not move the latest
-- value, so the id it got must be remembered for the next write of the same entity
local lastid = {}
local used = {}  -- backfill ids given out in this call, per entity
local out = {}
local a = 11
for k = 1, nkeys, per do
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
  local newest_et = nil  -- newest event time kept: the latest's, or history's once it expired
  if not status and cur then
    cur_et = struct.unpack('>l', cur)
    newest_et = cur_et
    if cur_et == et and string.sub(cur, 17) == payload then
      id = struct.unpack('>L', cur, 9)
      status = 2
    end
  elseif not status and hkey and ttl > 0 then
    -- The latest key expired with the ttl: history still knows the newest version, so an
    -- older write stays late instead of becoming the latest.
    local top = redis.call('ZRANGE', hkey, -1, -1, 'WITHSCORES')
    if top[1] then
      newest_et = tonumber(top[2])
      local top_id = struct.unpack('>L', top[1], 2)
      if not lastid[lkey] or lastid[lkey] < top_id then lastid[lkey] = top_id end
    end
  end
  if not status and hkey and newest_et ~= nil and et <= newest_et
      and not (cur_et ~= nil and et == cur_et) then
    -- A retry of a write older than the newest version is found in history. At the same
    -- event time as the latest, a different payload is a new write (last written wins),
    -- not the retry of an earlier one: A, B, A at one timestamp ends on A.
    local same = redis.call('ZRANGEBYSCORE', hkey, et_s, et_s)
    for _, m in ipairs(same) do
      if string.sub(m, 10) == payload then
        id = struct.unpack('>L', m, 2)
        status = 2
        break
      end
    end
  end
  if not status then
    if backfill then
      -- written_at is the version id: rows backfilled with the same written_at get ids a
      -- microsecond apart, so that every version stays distinct
      id = tonumber(ARGV[a + 2])
      local ukey = lkey .. '@' .. string.format('%.0f', id)
      while used[ukey] do
        id = id + 1
        ukey = lkey .. '@' .. string.format('%.0f', id)
      end
      used[ukey] = true
    else
      id = now
      local last = lastid[lkey]
      if not last and cur then last = struct.unpack('>L', cur, 9) end
      if last and last >= id then id = last + 1 end
    end
    lastid[lkey] = id
    if newest_et == nil or et >= newest_et then
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
          if not hkey then
            status = 4  -- already past the ttl and no history: nothing keeps it
            id = 0
          end
        end
      else
        if not dirty[lkey] then dirty_order[#dirty_order + 1] = lkey end
        dirty[lkey] = value
        latest[lkey] = value
      end
    elseif hkey then
      status = 1
    else
      -- late data for a latest-only view: nothing keeps it
      status = 4
      id = 0
    end
    if hkey and status ~= 4 then
      redis.call('ZADD', hkey, et_s, '\207' .. struct.pack('>L', id) .. payload)
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
  if channel ~= '' then
    -- one (version id, event time) pair per entity of the call; id 0: no new version
    if status == 0 or status == 1 then
      ev_pairs[#ev_pairs + 1] = struct.pack('>ll', id, et)
      ev_new = ev_new + 1
    else
      ev_pairs[#ev_pairs + 1] = ZERO16
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
if ev_new > 0 then
  local ids, pairs = ARGV[10], table.concat(ev_pairs)
  local entry = redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', ARGV[7], '*',
    'k', ARGV[8], 'f', ARGV[9], 'e', ids, 'v', pairs)
  redis.call('PUBLISH', channel, '\149' .. bin(entry) .. bin(ARGV[8]) .. bin(ARGV[9])
    .. bin(ids) .. bin(pairs))
end
return out
"""


# DELETE: remove entities (latest and history) and record one delete event per call.
#
# KEYS: per entity its latest and history keys; last, the view's change-feed stream
# ARGV[1] channel ("" = no events), ARGV[2] stream cap
# Returns the number of entities that had any key.
DELETE = r"""
-- msgpack bin32: the ids and pairs are bytes, not text
local function bin(s) return '\198' .. struct.pack('>I4', #s) .. s end
local nkeys = #KEYS - 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ids, pairs = {}, {}
local gone = 0
for k = 1, nkeys, 2 do
  if redis.call('UNLINK', KEYS[k], KEYS[k + 1]) > 0 then
    gone = gone + 1
    local lkey = KEYS[k]
    local open = string.find(lkey, '{', 1, true)
    local bar = string.find(lkey, '|', open, true)
    if string.sub(lkey, bar + 1, bar + 1) == ':' then
      -- partitioned layout (keys.py): the id follows the partition's tag
      ids[#ids + 1] = string.sub(lkey, string.find(lkey, '}', bar, true) + 2)
    else
      ids[#ids + 1] = string.sub(lkey, bar + 1, -2)
    end
    pairs[#pairs + 1] = struct.pack('>ll', 0, now)
  end
end
if ARGV[1] ~= '' and #ids > 0 then
  local joined, packed = table.concat(ids, '\n'), table.concat(pairs)
  local entry = redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', ARGV[2], '*',
    'k', 'd', 'f', '', 'e', joined, 'v', packed)
  redis.call('PUBLISH', ARGV[1], '\149' .. bin(entry) .. bin('d') .. bin('')
    .. bin(joined) .. bin(packed))
end
return gone
"""
