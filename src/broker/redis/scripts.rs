//! The Lua scripts that make a stream's seq, its record and its publication one step.

/// Gives an event of a stream its seq, appends it to the stream's Redis Stream and publishes
/// it to the nodes, atomically: every node sees the stream's events in seq order.
/// KEYS: stream, meta. ARGV: epoch if new, size, max age ms, payload, envelope head, the publish
/// command (`PUBLISH`, or `SPUBLISH` on a Redis Cluster, where every channel given must be in
/// the stream's slot), then (channel, envelope tail) pairs. Returns the seq and the epoch.
pub(super) const APPEND_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = tonumber(ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 's', seq, 'e', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', '~', tostring(now - age))
redis.call('PEXPIRE', KEYS[1], age)
redis.call('PEXPIRE', KEYS[2], age + 86400000)
for i = 7, #ARGV, 2 do
  redis.call(ARGV[6], ARGV[i], ARGV[5] .. seq .. ',"p":"' .. epoch .. '"' .. ARGV[i + 1])
end
return {seq, epoch}
"#;

/// Reads a stream's epoch, last seq and newest entries in one step. KEYS: stream, meta.
/// ARGV: most entries.
pub(super) const READ_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
if not meta[1] then return {false, 0, {}} end
return {meta[1], tonumber(meta[2]), redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])}
"#;
