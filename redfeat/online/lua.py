"""Server-side Lua steps. Each one is atomic on the server; each documents its KEYS and ARGV.

Stored forms (see keys.py for names):

    latest key   string  = int64 BE event_time_us .. uint64 BE version_id .. payload
    history key  string  = one entity's kept versions in one chunk, newest first:
                 int64 BE et_0 .. uint64 BE id_0                  the newest version's
                 .. varint n .. varint #meta .. varint span       span = et_0 - et_(n-1)
                 .. meta .. payload_0 .. payload_1 .. ... payload_(n-1)
        meta     per version i, newest first: varint(#payload_i)
                 .. varint(et_(i-1) - et_i) .. zigzag(id_(i-1) - id_i)
                 (the deltas of version 0 are 0)
        varint   LEB128: 7 bits a byte, low first, the high bit set on all but the last
        zigzag   the varint of 2d for d >= 0, of -2d - 1 for d < 0

The history key holds the versions older than the latest (for a view without ttl: the
latest one is in the latest key only, not twice); with a ttl, the latest too, since its
key expires. Readers merge the two and drop a version found in both (data written before
this layout). Versions are ordered by event time, then id: the last written wins ties.

Why a chunk and not a sorted set: a version in a listpack zset costs its member (0xCF, the
id, the payload) and a score, ~47-50 B for 3 Floats, and a member over 64 bytes (more than
5 Floats) makes the zset a skiplist of ~330 B a version; here a version costs its payload
and ~7 bytes of meta (versions seconds apart), whatever its width. The meta sits apart
from the payloads so that the trimming of the oldest works from the end of both (a varint
read backwards: its last byte is the only one under 0x80), a reader decodes the meta of
many chunks with a few numpy calls and all their payloads with one msgpack call
(history.decode_chunks), and the 16-byte head answers "the newest kept version" without a
walk. Lua numbers are doubles, exact to
2^53: times and ids (microseconds between 1900 and 2200) and their differences are; a
zigzag value may not be, so CHUNK makes its first byte apart (zsplit).
Data written before this layout (a zset history key) is converted by the first write
touching it (CHUNK's ch_zset); readers read either (history.read_chunks).

Version ids are the server clock in microseconds at write time (so they also give
``written_at``), bumped past the entity's previous id so that they only grow.
"""

from __future__ import annotations

# FEED: the Lua function both WRITE and DELETE use to append one entry to a change feed and
# keep the feed within its bounds. Written per feed key, so a feed split into partitions
# is bounded per partition by the same rule.
#
# Entry ids are "<ms>-<count>": ms is the server clock (never going back within a feed), and
# count the number of versions the feed has recorded up to and including this entry. So
# the cap counts versions, not entries, without reading entries back: the entries whose
# count is <= newest count - cap hold only versions older than the newest `cap`, and are
# trimmed (exact MINID, amortised: only when the count crosses a multiple of `step`, so
# the feed holds at most cap + step + (versions of one entry - 1) versions). The age bound
# is MINID ~ (now - retention): whole stream nodes, never a scan. A reader that fell
# behind sees it in XINFO STREAM's max-deleted-entry-id (events.changes).
FEED = r"""
local function feed_id_parts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function feed_add(fkey, n, bounds, now_ms, ...)
  local cap, keep_ms = string.match(bounds, '^(%d+) (%d+)$')
  cap, keep_ms = tonumber(cap), tonumber(keep_ms)
  local ms, count = now_ms, n
  local last = redis.call('XREVRANGE', fkey, '+', '-', 'COUNT', 1)
  if last[1] then
    local lms, lcount = feed_id_parts(last[1][1])
    if lms > ms then ms = lms end
    count = lcount + n
  end
  local entry = redis.call('XADD', fkey, string.format('%.0f-%.0f', ms, count), ...)
  local step = math.max(1, math.min(256, math.floor(cap / 8)))
  if math.floor(count / step) > math.floor((count - n) / step) then
    local oldest = count - cap  -- entries counted up to here hold only older versions
    local k = 1
    while oldest > 0 do
      local rows = redis.call('XRANGE', fkey, '-', '+', 'COUNT', k)
      local keep = nil
      for _, row in ipairs(rows) do
        local _, c = feed_id_parts(row[1])
        if c > oldest then keep = row[1] break end
      end
      if keep then
        if keep ~= rows[1][1] then redis.call('XTRIM', fkey, 'MINID', keep) end
        break
      end
      local lms, lcount = feed_id_parts(rows[#rows][1])
      redis.call('XTRIM', fkey, 'MINID', string.format('%.0f-%.0f', lms, lcount + 1))
      k = math.min(k * 4, 64)
    end
  end
  if keep_ms > 0 then
    redis.call('XTRIM', fkey, 'MINID', '~', string.format('%.0f', now_ms - keep_ms))
  end
  return entry
end
"""

# CHUNK: the Lua functions WRITE and DELETE_VERSION use to read and change a history chunk
# (the stored form is in the module docstring). ch_add, ch_trim and ch_find take a chunk's
# string (false: none) and return the new one (nil: empty, the key goes). The common
# write, a version in front and the oldest out at the end, reads the head, the first
# record's length and the dropped records' meta from the end, and makes the new string
# with one concatenation; a late version walks the records newer than it. An entity
# written several times in one call, a removal and a conversion use the list of versions
# instead (ch_versions, l_add, ch_cut, ch_list): decoded once, encoded once. h_* take
# either form.
CHUNK = r"""
-- varints are made as bytes in buf and turned into one string by string.char: no table
-- and no small string per number
local buf = {}
local function vbuf(v, k)
  while v >= 128 do
    local r = v % 128
    buf[k] = r + 128
    v = (v - r) / 128
    k = k + 1
  end
  buf[k] = v
  return k + 1
end
local function vlen(v)
  local n = 1
  while v >= 128 do
    v = (v - v % 128) / 128
    n = n + 1
  end
  return n
end
-- zigzag: 2d or -2d - 1 would be inexact past 2^53, so the first byte (the sign and six
-- bits) is made apart and the rest is the plain varint of what is left
local function zsplit(d)
  local m, s = d, 0
  if d < 0 then m, s = -d - 1, 1 end
  local low = m % 64
  return 2 * low + s, (m - low) / 64
end
local function zbuf(d, k)
  local first, rest = zsplit(d)
  if rest == 0 then
    buf[k] = first
    return k + 1
  end
  buf[k] = first + 128
  return vbuf(rest, k + 1)
end
local function zlen(d)
  local _, rest = zsplit(d)
  if rest == 0 then return 1 end
  return 1 + vlen(rest)
end
local function vput(v)
  if v < 128 then return string.char(v) end
  return string.char(unpack(buf, 1, vbuf(v, 1) - 1))
end
local function zput(d)
  return string.char(unpack(buf, 1, zbuf(d, 1) - 1))
end
-- the varint that ends at byte j: its value and its first byte (the byte before a varint
-- is the last of another one, under 128, and a chunk's meta starts past byte 16). A
-- zigzag's value read so is not its value. Up to four bytes are read in one call.
local function vback(s, j)
  local a, b, c, d, e = string.byte(s, j - 4, j)
  if d < 128 then return e, j end
  if c < 128 then return e * 128 + d - 128, j - 1 end
  if b < 128 then return (e * 128 + d - 128) * 128 + c - 128, j - 2 end
  if a < 128 then return ((e * 128 + d - 128) * 128 + c - 128) * 128 + b - 128, j - 3 end
  local v = e
  while d >= 128 do
    v = v * 128 + d - 128
    j = j - 1
    d = string.byte(s, j - 1)
  end
  return v, j
end
-- Walks read the meta a window of bytes at a time into a table (one string.byte call),
-- then decode from the table: a byte read from a table costs a fraction of a call.
local function tget(t, j)
  local b = t[j]
  if b < 128 then return b, j + 1 end
  local v, m = 0, 1
  while b >= 128 do
    v = v + (b - 128) * m
    m = m * 128
    j = j + 1
    b = t[j]
  end
  return v + b * m, j + 1
end
local function tzget(t, j)
  local b = t[j]
  local rest = 0
  if b >= 128 then
    b = b - 128
    rest, j = tget(t, j + 1)
  else
    j = j + 1
  end
  local sg = b % 2
  local v = (b - sg) / 2 + rest * 64
  if sg == 1 then return -v - 1, j end
  return v, j
end
-- a chunk's head: newest event time and id, versions, meta length, span, meta's offset
local function ch_head(s)
  local et, id = struct.unpack('>lL', s)
  -- the common head in one read: a byte each for the count and meta length, a span of
  -- up to four bytes (a chunk is at least 23 bytes long)
  local n, ml, a, b, c, d = string.byte(s, 17, 22)
  if n < 128 and ml < 128 then
    if a < 128 then return et, id, n, ml, a, 20 end
    if b < 128 then return et, id, n, ml, a - 128 + b * 128, 21 end
    if c < 128 then return et, id, n, ml, a - 128 + (b - 128 + c * 128) * 128, 22 end
    if d and d < 128 then
      return et, id, n, ml, a - 128 + (b - 128 + (c - 128 + d * 128) * 128) * 128, 23
    end
  end
  local t, span, j = {string.byte(s, 17, 46)}, nil, nil
  n, j = tget(t, 1)
  ml, j = tget(t, j)
  span, j = tget(t, j)
  return et, id, n, ml, span, 16 + j
end
-- the record whose meta starts at byte m of s: its payload length, deltas and the next
-- record's offset, read through the window t (t[i - base] is byte i of s, 64 of them;
-- read again when the record may pass its end: a record's meta is at most 28 bytes)
local function ch_rec_at(s, t, base, m)
  if not t or m + 32 > base + 64 then t, base = {string.byte(s, m, m + 63)}, m - 1 end
  local len, dt, did, j
  len, j = tget(t, m - base)
  dt, j = tget(t, j)
  did, j = tzget(t, j)
  return t, base, len, dt, did, j + base
end
-- where version (et, id) goes in chunk s: before record k, the first older one (event
-- time, then id; n + 1: none), whose meta and payload start at mk and pk; the record
-- before it's event time and id; record k's payload length, event time, id and the next
-- record's meta offset
local function ch_walk(s, et, id)
  local pet, pid, n, ml, _, m = ch_head(s)
  local p, t, base = m + ml, nil, 0
  for k = 1, n do
    local len, dt, did, mnext
    t, base, len, dt, did, mnext = ch_rec_at(s, t, base, m)
    local ket, kid = pet - dt, pid - did
    if ket < et or (ket == et and kid <= id) then
      return k, m, p, pet, pid, len, ket, kid, mnext
    end
    pet, pid, m, p = ket, kid, mnext, p + len
  end
  return n + 1, m, p, pet, pid
end
-- every version of a chunk as {et, id, payload}, newest first
local function ch_versions(s)
  local out = {}
  if not s then return out end
  local et, id, n, ml, _, m = ch_head(s)
  local p, t, base = m + ml, nil, 0
  for k = 1, n do
    local len, dt, did
    t, base, len, dt, did, m = ch_rec_at(s, t, base, m)
    et, id = et - dt, id - did
    out[k] = {et, id, string.sub(s, p, p + len - 1)}
    p = p + len
  end
  return out
end
-- the chunk of {et, id, payload} versions given newest first
local function ch_list(list)
  if #list == 0 then return nil end
  local metas, pays = {}, {}
  local pet, pid = list[1][1], list[1][2]
  for i, v in ipairs(list) do
    metas[i] = vput(#v[3]) .. vput(pet - v[1]) .. zput(pid - v[2])
    pays[i] = v[3]
    pet, pid = v[1], v[2]
  end
  local meta = table.concat(metas)
  return struct.pack('>lL', list[1][1], list[1][2]) .. vput(#list) .. vput(#meta)
    .. vput(list[1][1] - pet) .. meta .. table.concat(pays)
end
-- the versions of a history key written before chunks: a zset (score event time, member
-- 0xCF .. id .. payload, oldest first), newest first
local function ch_zset(key)
  local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local list = {}
  for i = #rows - 1, 1, -2 do
    local m = rows[i]
    list[#list + 1] = {tonumber(rows[i + 1]), struct.unpack('>L', m, 2), string.sub(m, 10)}
  end
  return list
end
-- a history key's chunk; converted: whether it was a zset (to be written back as a chunk)
local function ch_get(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw.err then return ch_list(ch_zset(key)) or false, true end
  return raw, false
end
-- the id of a kept version at event time et with this payload (a backfill's: an id in
-- [want, want + 256)), or nil
local function ch_find(s, et, payload, want)
  if not s then return nil end
  local ket, kid, n, ml, _, m = ch_head(s)
  local p, t, base = m + ml, nil, 0
  for _ = 1, n do
    local len, dt, did
    t, base, len, dt, did, m = ch_rec_at(s, t, base, m)
    ket, kid = ket - dt, kid - did
    if ket < et then return nil end
    if ket == et and len == #payload and string.sub(s, p, p + len - 1) == payload
        and (not want or (kid >= want and kid < want + 256)) then
      return kid
    end
    p = p + len
  end
  return nil
end
-- The same steps on a list of versions (ch_versions), for an entity written more than
-- once in a call: decoded once, changed in place, made a string once (ch_list).
-- drop the oldest of a list while more than keep are kept or the oldest is before cutoff
local function ch_cut(list, keep, cutoff)
  while #list > 0 and (#list > keep or list[#list][1] < cutoff) do list[#list] = nil end
  return list
end
local function l_find(list, et, payload, want)
  for _, v in ipairs(list) do
    if v[1] < et then return nil end
    if v[1] == et and v[3] == payload and (not want or (v[2] >= want and v[2] < want + 256)) then
      return v[2]
    end
  end
  return nil
end
local function l_add(list, et, id, payload, keep, cutoff)
  local k = 1
  while list[k] and (list[k][1] > et or (list[k][1] == et and list[k][2] > id)) do k = k + 1 end
  table.insert(list, k, {et, id, payload})
  return ch_cut(list, keep, cutoff)
end
-- Drop the records of s from the end (its meta ends at byte mend, its payloads at pend;
-- the last kept one is record `last`, the oldest one's event time et0 - span) while the
-- records kept, with `extra` more, are more than keep or the oldest is before cutoff; never
-- record `floor` or one before. What is left: mend, pend, span, last.
local function ch_drop(s, mend, pend, span, last, extra, floor, keep, cutoff, et0)
  while last >= floor and (last + extra > keep or et0 - span < cutoff) do
    local _, j = vback(s, mend)
    local dt, len
    dt, j = vback(s, j - 1)
    len, j = vback(s, j - 1)
    mend, pend, span, last = j - 1, pend - len, span - dt, last - 1
  end
  return mend, pend, span, last
end
-- a chunk's head (the newest's et and id, then its varints) and the meta of the records
-- from m1 (the two records whose deltas change: made as one string), then the rest
local function ch_build(et, id, n, span, mid, s, m, m1, m2, mend, p1, payload, p2, pend)
  local ml = (m1 - m) + #mid + (mend - m2 + 1)
  local k = vbuf(span, vbuf(ml, vbuf(n, 1)))
  return struct.pack('>lL', et, id) .. string.char(unpack(buf, 1, k - 1))
    .. string.sub(s, m, m1 - 1) .. mid .. string.sub(s, m2, mend)
    .. string.sub(s, p1, p2 - 1) .. payload .. string.sub(s, p2, pend)
end
-- the meta of two records as one string: (len, dt, did), then (len2, dt2, did2) if len2
local function ch_recs(len, dt, did, len2, dt2, did2)
  local k = zbuf(did, vbuf(dt, vbuf(len, 1)))
  if len2 then k = zbuf(did2, vbuf(dt2, vbuf(len2, k))) end
  return string.char(unpack(buf, 1, k - 1))
end
-- the chunk trimmed as ch_drop does (s itself when nothing goes)
local function ch_trim(s, keep, cutoff)
  local et0, id0, n, ml, span, m = ch_head(s)
  local pstart = m + ml
  local mend, pend, span2, last = ch_drop(s, pstart - 1, #s, span, n, 0, 1, keep, cutoff, et0)
  if last == n then return s end
  if last == 0 then return nil end
  return ch_build(et0, id0, last, span2, '', s, m, m, m, mend, pstart, '', pstart, pend)
end
-- The version (et, id, payload) in place, before the first one older than it (event
-- time, then id), then the oldest dropped while more than keep are kept or the oldest is
-- before cutoff; the new chunk. Works on the string: the records before the new one are
-- walked, the dropped ones read from the end, and only the new record's meta and the next
-- one's are made; the rest is copied once, in one concatenation.
local function ch_add(s, et, id, payload, keep, cutoff)
  local len = #payload
  if not s then
    if keep < 1 or et < cutoff then return nil end
    -- a chunk of one: count 1, meta length, span 0, its meta (length, two zero deltas)
    local k = vbuf(len, 4)
    buf[1], buf[2], buf[3], buf[k], buf[k + 1] = 1, k - 2, 0, 0, 0
    return struct.pack('>lL', et, id) .. string.char(unpack(buf, 1, k + 1)) .. payload
  end
  local et0, id0, n, ml, span, m = ch_head(s)
  local pstart = m + ml
  if et > et0 or (et == et0 and id >= id0) then
    -- The common write: the new version in front. The first record's deltas (0: two zero
    -- bytes after its length) become its distance to it; the head's varints and the two
    -- records' meta are made as one string.
    local len1, m2 = string.byte(s, m), m + 3
    if len1 >= 128 then
      local j
      len1, j = tget({string.byte(s, m, m + 9)}, 1)
      m2 = m + j + 1
    end
    local mend, pend, old
    mend, pend, span, old = ch_drop(s, pstart - 1, #s, span, n, 1, 1, keep, cutoff, et0)
    if old > 0 then
      local dt, did = et - et0, id - id0
      local ml2 = vlen(len) + 2 + vlen(len1) + vlen(dt) + zlen(did) + mend - m2 + 1
      local k = vbuf(len, vbuf(span + dt, vbuf(ml2, vbuf(old + 1, 1))))
      buf[k], buf[k + 1] = 0, 0
      k = zbuf(did, vbuf(dt, vbuf(len1, k + 2)))
      return struct.pack('>lL', et, id) .. string.char(unpack(buf, 1, k - 1))
        .. string.sub(s, m2, mend) .. payload .. string.sub(s, pstart, pend)
    end
    if keep < 1 or et < cutoff then return nil end
    return ch_list({{et, id, payload}})  -- every older version dropped
  end
  if et < et0 - span and (n + 1 > keep or et < cutoff) then
    return ch_trim(s, keep, cutoff)  -- older than every kept one, and not kept
  end
  local k, mk, pk, pet, pid, klen, ket, kid, mnext = ch_walk(s, et, id)
  if k > n and (n + 1 > keep or et < cutoff) then
    return ch_trim(s, keep, cutoff)
  end
  local mend, pend, last = pstart - 1, #s, n
  mend, pend, span, last = ch_drop(s, mend, pend, span, last, 1, k, keep, cutoff, et0)
  if last >= k then
    -- record k stays: its deltas become its distance to the new version
    local mid = ch_recs(len, pet - et, pid - id, klen, et - ket, id - kid)
    return ch_build(et0, id0, last + 1, span, mid, s, m, mk, mnext, mend, pstart, payload, pk,
      pend)
  end
  if last + 1 > keep or et < cutoff then
    -- the new version would go too: the rare case, through the list
    return ch_list(l_add(ch_versions(s), et, id, payload, keep, cutoff))
  end
  -- the new version is the oldest kept
  return ch_build(et0, id0, k, et0 - et, ch_recs(len, pet - et, pid - id), s, m, mk, mk, mk - 1,
    pstart, payload, pk, pk - 1)
end
-- a history in either form (h: a chunk string, false for none, or a list of versions):
-- its newest version's event time and id (nil: none), a kept version by payload, the new
-- form after an insert or a trim, its string (nil: none)
local function h_top(h)
  if type(h) == 'table' then
    if h[1] then return h[1][1], h[1][2] end
    return nil
  end
  if h then return struct.unpack('>lL', h) end
  return nil
end
local function h_find(h, et, payload, want)
  if type(h) == 'table' then return l_find(h, et, payload, want) end
  return ch_find(h, et, payload, want)
end
local function h_add(h, et, id, payload, keep, cutoff)
  if type(h) == 'table' then return l_add(h, et, id, payload, keep, cutoff) end
  return ch_add(h, et, id, payload, keep, cutoff)
end
local function h_trim(h, keep, cutoff)
  if type(h) == 'table' then return ch_cut(h, keep, cutoff) end
  return ch_trim(h, keep, cutoff)
end
local function h_bytes(h)
  if type(h) == 'table' then return ch_list(h) end
  return h
end
"""


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
# ARGV[7] feed bounds "<cap in versions> <retention ms, 0 none>" (FEED)
# ARGV[8] event kind ("w"), ARGV[9] changed fields
#         (comma-joined names), ARGV[10] the call's escaped entity ids joined by "\n"
# ARGV[11] "1": feed entries carry the payloads (an offline log is attached), "0": not
# ARGV[12..] per entity: event_time_us, payload[, expected latest ("" = none) | written_at]
#
# Events: every new version of the call goes into ONE stream entry and ONE message (a chunk
# of up to 256 entities), so the feed costs two commands per call, not two per entity:
#   stream entry {k: kind, f: fields, e: escaped entity ids joined by "\n",
#                 v: int64 BE (version id, event_time_us) per id; version id 0: the write
#                 made no new version (a retry, or late data dropped),
#                 p: the payload of every new version, in order, each as uint32 BE length
#                 .. payload; only with ARGV[11] "1": the offline log is fed from the
#                 feed, and reads the versions of an entry without p from Redis}
#   message      msgpack [entry id, kind, fields, ids, pairs], each as bin
# Escaped ids never contain a newline (keys.py), so the join is unambiguous.
#
# Returns, per entity, {version id, status}: 0 written and latest moved, 1 written to history
# only (late data), 2 duplicate of an existing version (id of that version), or superseded by
# a later row of the same entity and event time in the call (id of that row's version),
# 3 CAS mismatch, 4 late data for a view without history: dropped (id 0).
WRITE = (
    FEED
    + CHUNK
    + r"""
-- msgpack bin32: the ids and pairs are bytes, not text
local function bin(s) return '\198' .. struct.pack('>I4', #s) .. s end
local per = tonumber(ARGV[1])
local hmode = ARGV[2]
local hval = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local cas = ARGV[5] == '1'
local backfill = ARGV[5] == '2'
local stride = (cas or backfill) and 3 or 2
local with_pay = ARGV[11] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local channel = ARGV[6]
local ZERO16 = string.rep('\0', 16)
local ev_new = 0
local nkeys = #KEYS - 1  -- the stream key comes last
local ev_pairs = {}
local ev_pay = {}
-- Read every latest value with one MGET and, without a ttl, write them back with one MSET:
-- one call per chunk instead of two per entity. The table keeps each key's current value
-- so that an entity appearing twice in a chunk sees its own earlier version.
local lkeys = {}
for k = 1, nkeys, per do lkeys[#lkeys + 1] = KEYS[k] end
local fetched = redis.call('MGET', unpack(lkeys))
local latest = {}
local multi = {}  -- history keys of entities written more than once in this call
for i, key in ipairs(lkeys) do
  if latest[key] == nil then
    latest[key] = fetched[i]
  elseif per == 2 then
    multi[KEYS[2 * i]] = true
  end
end
-- History chunks the same way: one MGET, one MSET (and one DEL of emptied ones) at the end.
-- MGET reads a key of another type as nil: a nil chunk is looked at again (TYPE) once a
-- write needs it, in case it is a zset written before chunks (converted, then written).
local hraw, hseen, hchanged, hist_order = {}, {}, {}, {}
local old_layout = false  -- whether a nil chunk may be a zset (one EXISTS tells for all)
if per == 2 then
  -- Only the chunks a write may read: without a ttl, an entity with no latest value has
  -- no history to read (a first write writes none); one read later in the call (its
  -- entity written again) is a GET of its own (chunk).
  local hkeys, absent = {}, {}
  for i = 1, #lkeys do
    if (ttl > 0 or fetched[i]) and hraw[KEYS[2 * i]] == nil then
      hkeys[#hkeys + 1] = KEYS[2 * i]
      hraw[KEYS[2 * i]] = false
    end
  end
  if #hkeys > 0 then
    local got = redis.call('MGET', unpack(hkeys))
    for i, key in ipairs(hkeys) do
      hraw[key] = got[i]
      if not got[i] then absent[#absent + 1] = key end
    end
    old_layout = #absent > 0 and redis.call('EXISTS', unpack(absent)) > 0
  end
end
-- a history key's new form (nil: none left), written back at the end
local function store(hkey, h)
  if not hchanged[hkey] then
    hchanged[hkey] = true
    hist_order[#hist_order + 1] = hkey
  end
  hraw[hkey] = h or false
end
-- a history key's history (CHUNK's h: a string, false, or, for an entity written more
-- than once in the call, a list); a zset written before chunks is converted at first
-- sight. cur: the entity's latest value
local function chunk(hkey, cur)
  local h = hraw[hkey]
  local zset = false
  if h == nil then
    h = redis.pcall('GET', hkey)
    zset = type(h) == 'table'  -- WRONGTYPE: a zset
    if zset then h = false end
    hraw[hkey] = h
  elseif not h and old_layout and not hseen[hkey] then
    zset = redis.call('TYPE', hkey).ok == 'zset'
  end
  hseen[hkey] = true
  if zset then
    local list = ch_zset(hkey)
    if ttl == 0 and cur and list[1] and list[1][2] == struct.unpack('>L', cur, 9) then
      table.remove(list, 1)  -- even older data held the latest in history too
    end
    h = list
    store(hkey, multi[hkey] and list or ch_list(list))
  end
  if multi[hkey] and type(h) ~= 'table' then
    h = ch_versions(h)
    hraw[hkey] = h
  end
  return hraw[hkey]
end
local dirty, dirty_order = {}, {}
-- the last id given to each entity in this call: a late write does not move the latest
-- value, so the id it got must be remembered for the next write of the same entity
local lastid = {}
local used = {}  -- backfill ids given out in this call, per entity
local out = {}
-- A plain write of two rows of one entity at one event time keeps the last: the earlier
-- is superseded at once (last written wins), and keeping it would make a resent chunk add
-- it again (it is not the latest any more, so it would not be found as a duplicate).
local final = {}
if not cas and not backfill then
  local b = 12
  for k = 1, nkeys, per do
    final[KEYS[k] .. '@' .. ARGV[b]] = b
    b = b + stride
  end
end
local superseded = {}  -- position in out of a superseded row -> its key@event time
local a = 12
for k = 1, nkeys, per do
  local lkey = KEYS[k]
  local hkey = nil
  if per == 2 then hkey = KEYS[k + 1] end
  local et_s = ARGV[a]
  local et = tonumber(et_s)
  local payload = ARGV[a + 1]
  local cur = latest[lkey]
  local id, status = nil, nil
  local fkey = lkey .. '@' .. et_s
  if final[fkey] and final[fkey] ~= a then
    status = 2
    id = 0
    superseded[#out + 1] = fkey
  end
  if not status and cas and (cur or '') ~= ARGV[a + 2] then
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
    local top_et, top_id = h_top(chunk(hkey, cur))
    if top_et then
      newest_et = top_et
      if not lastid[lkey] or lastid[lkey] < top_id then lastid[lkey] = top_id end
    end
  end
  if not status and hkey and newest_et ~= nil and et <= newest_et
      and (backfill or not (cur_et ~= nil and et == cur_et)) then
    -- A retry of a write older than the newest version is found in history. At the same
    -- event time as the latest, a different payload is a new write (last written wins),
    -- not the retry of an earlier one: A, B, A at one timestamp ends on A.
    -- a backfilled version is the same one only with its written_at as id (or the few
    -- ids after it that rows sharing a written_at in one call get)
    local want = backfill and tonumber(ARGV[a + 2]) or nil
    local mid = h_find(chunk(hkey, cur), et, payload, want)
    if mid then
      id = mid
      status = 2
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
      if ttl > 0 then
        -- the latest key expires with the ttl: history keeps the latest version too
        local h = chunk(hkey, cur)
        local keep, cutoff = hval, -math.huge
        if hmode ~= 'c' then
          local newest = h_top(h) or et  -- history's newest once this one is in
          keep, cutoff = math.huge, math.max(et, newest) - hval
        end
        store(hkey, h_add(h, et, id, payload, keep, cutoff))
      elseif cur then
        -- Without a ttl the latest version lives in the latest key only: history holds
        -- the older ones (COUNT - 1 besides the latest). Late data goes there; a new
        -- latest moves the one it replaces, unless history has it already (a view that
        -- had a ttl).
        local h = chunk(hkey, cur)
        local keep, cutoff = hval - 1, -math.huge
        if hmode ~= 'c' then keep, cutoff = math.huge, (status == 0 and et or cur_et) - hval end
        local cur_id = struct.unpack('>L', cur, 9)
        local _, top_id = h_top(h)
        if status == 1 then
          store(hkey, h_add(h, et, id, payload, keep, cutoff))
        elseif top_id == cur_id then
          store(hkey, h_trim(h, keep, cutoff))
        else
          store(hkey, h_add(h, cur_et, cur_id, string.sub(cur, 17), keep, cutoff))
        end
      end
    end
  end
  if channel ~= '' then
    -- one (version id, event time) pair per entity of the call; id 0: no new version
    if status == 0 or status == 1 then
      ev_pairs[#ev_pairs + 1] = struct.pack('>ll', id, et)
      if with_pay then ev_pay[#ev_pay + 1] = struct.pack('>I4', #payload) .. payload end
      ev_new = ev_new + 1
    else
      ev_pairs[#ev_pairs + 1] = ZERO16
    end
  end
  out[#out + 1] = id
  out[#out + 1] = status
  if final[fkey] == a then final[fkey] = id end  -- the version the superseded rows got
  a = a + stride
end
for pos, fkey in pairs(superseded) do out[pos] = final[fkey] end
local kv, gone = {}, {}
for _, key in ipairs(dirty_order) do
  kv[#kv + 1] = key
  kv[#kv + 1] = dirty[key]
end
for _, hkey in ipairs(hist_order) do
  local bytes = h_bytes(hraw[hkey])
  if bytes then
    kv[#kv + 1] = hkey
    kv[#kv + 1] = bytes
  else
    gone[#gone + 1] = hkey  -- trimmed to nothing (or an empty zset converted)
  end
end
if #kv > 0 then redis.call('MSET', unpack(kv)) end
if #gone > 0 then redis.call('DEL', unpack(gone)) end
if ev_new > 0 then
  local ids, pairs = ARGV[10], table.concat(ev_pairs)
  local entry
  if with_pay then
    entry = feed_add(KEYS[#KEYS], ev_new, ARGV[7], math.floor(now / 1000),
      'k', ARGV[8], 'f', ARGV[9], 'e', ids, 'v', pairs, 'p', table.concat(ev_pay))
  else
    entry = feed_add(KEYS[#KEYS], ev_new, ARGV[7], math.floor(now / 1000),
      'k', ARGV[8], 'f', ARGV[9], 'e', ids, 'v', pairs)
  end
  redis.call('PUBLISH', channel, '\149' .. bin(entry) .. bin(ARGV[8]) .. bin(ARGV[9])
    .. bin(ids) .. bin(pairs))
end
return out
"""
)


# DELETE: remove entities (latest and history) and record one delete event per call.
#
# KEYS: per entity its latest and history keys; last, the view's change-feed stream
# ARGV[1] channel ("" = no events), ARGV[2] feed bounds (see WRITE)
# Returns the number of entities that had any key.
DELETE = (
    FEED
    + r"""
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
  local entry = feed_add(KEYS[#KEYS], #ids, ARGV[2], math.floor(now / 1000),
    'k', 'd', 'f', '', 'e', joined, 'v', packed)
  redis.call('PUBLISH', ARGV[1], '\149' .. bin(entry) .. bin('d') .. bin('')
    .. bin(joined) .. bin(packed))
end
return gone
"""
)


# DELETE_VERSION: remove one version of one entity; the newest remaining one becomes the
# latest if it was the latest, and tags naming it go.
#
# KEYS[1] latest key, KEYS[2] history key, KEYS[3] tags hash
# ARGV[1] version id, ARGV[2] ttl in ms (0 none; with a ttl history holds the latest too)
# Returns 1 if the version was found, else 0.
DELETE_VERSION = (
    CHUNK
    + r"""
local vid = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local found = 0
local s, changed = ch_get(KEYS[2])
-- history is bounded by the view's setting: a walk over one entity's versions
local list = ch_versions(s)
for i, v in ipairs(list) do
  if v[2] == vid then
    table.remove(list, i)
    found, changed = 1, true
    break
  end
end
local cur = redis.call('GET', KEYS[1])
if cur and struct.unpack('>L', cur, 9) == vid then
  found = 1
  local top = list[1]
  if top then
    local et = top[1]
    local value = struct.pack('>lL', et, top[2]) .. top[3]
    if ttl > 0 then
      local t = redis.call('TIME')
      local exp = math.floor(et / 1000) + ttl
      if exp > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
        redis.call('SET', KEYS[1], value, 'PXAT', exp)
      else
        redis.call('DEL', KEYS[1])
      end
    else
      table.remove(list, 1)  -- the latest lives in the latest key only
      changed = true
      redis.call('SET', KEYS[1], value)
    end
  else
    redis.call('DEL', KEYS[1])
  end
end
if changed then
  local bytes = ch_list(list)
  if bytes then redis.call('SET', KEYS[2], bytes) else redis.call('DEL', KEYS[2]) end
end
local tags = redis.call('HGETALL', KEYS[3])
for i = 1, #tags, 2 do
  if tonumber(tags[i + 1]) == vid then redis.call('HDEL', KEYS[3], tags[i]) end
end
return found
"""
)
