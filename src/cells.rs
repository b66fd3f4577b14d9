//! Collaborative cells: an edit is applied only if its version is newer than the cell's current
//! one. The comparison and the write are one step: a Lua script in Redis (so two nodes cannot both
//! win), a locked map on a single node.
//!
//! A cell belongs to a room: `(room, sheet, cell)` names it, so an edit (and the conflict that
//! reveals a cell's content) reaches only the cells of a room the editor is in. Versions may run
//! ahead of the cell's current version (or of the clock, for clients that use millisecond
//! timestamps) by at most [`MAX_AHEAD`], so nobody can lock a cell with a huge version. Each room
//! holds at most `presence.max_cells_per_room` cells on `presence.max_sheets_per_room` sheets; on a
//! single node a room's cells are forgotten once no connection of the node is in it, and in Redis
//! they expire `CELL_TTL_SECS` (seven days) after the last edit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::keys;
use crate::broker::redis::RedisBroker;

/// How long Redis keeps a room's cells after its last edit.
const CELL_TTL_SECS: u64 = 7 * 86_400;

/// How far a version may run ahead of both the cell's current version and the current time in
/// milliseconds: one minute of timestamps, or 60,000 steps of a counter.
pub const MAX_AHEAD: i64 = 60_000;

/// Compare-and-set in the room's cell hash. KEYS: cells hash, sheets set (one hash tag: the room).
/// ARGV: field, version, cell JSON, ttl, max cells, max sheets, sheet, clock limit, max ahead.
/// Returns {1, json} accepted, {0, current} conflict, {2, what} room full, {3, limit} too far ahead.
const APPLY_SCRIPT: &str = r#"
local version = tonumber(ARGV[2])
local limit = tonumber(ARGV[8])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and decoded['version'] then
    local have = tonumber(decoded['version'])
    if version <= have then
      return {0, current}
    end
    if have + tonumber(ARGV[9]) > limit then
      limit = have + tonumber(ARGV[9])
    end
  end
else
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
    return {2, 'cells'}
  end
  if redis.call('SISMEMBER', KEYS[2], ARGV[7]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[6]) then
    return {2, 'sheets'}
  end
end
if version > limit then
  return {3, string.format('%.0f', limit)}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1, ARGV[3]}
"#;

/// A cell's content and who last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Value.
    pub value: Value,
    /// Formula, if any.
    pub formula: Option<String>,
    /// Version (the spreadsheet profile uses millisecond timestamps).
    pub version: i64,
    /// Last editor.
    pub user_id: Option<String>,
    /// Last editor's name.
    pub username: Option<String>,
}

/// What became of an edit.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The edit is now the cell's content.
    Accepted(Cell),
    /// The cell is at this newer (or equal) version; the edit was refused.
    Conflict(Cell),
    /// The room already holds as many cells (or sheets) as it may; nothing was written.
    RoomFull(&'static str),
    /// The version runs further ahead than allowed; the largest acceptable version.
    TooFarAhead(i64),
}

/// Why an edit could not be decided.
#[derive(Debug, thiserror::Error)]
#[error("the cell store is unavailable: {0}")]
pub struct CellError(String);

/// Bounds of a room's cells.
#[derive(Debug, Clone, Copy)]
pub struct CellLimits {
    /// Cells per room.
    pub cells: usize,
    /// Distinct sheets per room.
    pub sheets: usize,
}

#[derive(Default)]
struct RoomCells {
    cells: HashMap<(String, String), Cell>,
    sheets: HashSet<String>,
}

/// The cells of collaborative rooms: one decision for the cluster in Redis, chosen at start-up
/// ([`Cells::new`] is given the Redis broker or not), else this node's map.
#[derive(Default)]
pub struct Cells {
    /// Cells of this node (used without Redis), by room.
    local: Mutex<HashMap<Arc<str>, RoomCells>>,
    cluster: Option<Arc<RedisBroker>>,
}

impl Cells {
    /// Cells kept in Redis when `cluster` is given, else on this node.
    pub fn new(cluster: Option<Arc<RedisBroker>>) -> Cells {
        Cells { local: Mutex::default(), cluster }
    }

    /// Applies an edit to a cell of `room` if it is newer than the cell and within bounds.
    pub async fn apply(
        &self,
        room: &Arc<str>,
        sheet: &str,
        cell_id: &str,
        edit: Cell,
        limits: CellLimits,
    ) -> Result<Applied, CellError> {
        let clock_limit = crate::stats::unix_millis() as i64 + MAX_AHEAD;
        if let Some(redis) = self.cluster.as_deref() {
            let prefix = redis.key_prefix();
            let field = format!("{}:{}", keys::part(sheet), keys::part(cell_id));
            let json = serde_json::to_string(&edit).map_err(|e| CellError(e.to_string()))?;
            let (outcome, stored): (i64, String) = redis
                .query_as(
                    redis::cmd("EVAL")
                        .arg(APPLY_SCRIPT)
                        .arg(2)
                        .arg(keys::tagged(prefix, "cells", room))
                        .arg(keys::tagged(prefix, "cellsheets", room))
                        .arg(&field)
                        .arg(edit.version)
                        .arg(&json)
                        .arg(CELL_TTL_SECS)
                        .arg(limits.cells)
                        .arg(limits.sheets)
                        .arg(sheet)
                        .arg(clock_limit)
                        .arg(MAX_AHEAD),
                )
                .await
                .map_err(|e| CellError(e.to_string()))?;
            return match outcome {
                1 => Ok(Applied::Accepted(serde_json::from_str(&stored).map_err(|e| CellError(e.to_string()))?)),
                0 => Ok(Applied::Conflict(serde_json::from_str(&stored).map_err(|e| CellError(e.to_string()))?)),
                2 => Ok(Applied::RoomFull(if stored == "sheets" { "sheets" } else { "cells" })),
                _ => Ok(Applied::TooFarAhead(stored.parse().unwrap_or(clock_limit))),
            };
        }
        let mut rooms = self.local.lock();
        let cells = rooms.entry(room.clone()).or_default();
        let key = (sheet.to_string(), cell_id.to_string());
        let limit = match cells.cells.get(&key) {
            Some(current) if edit.version <= current.version => return Ok(Applied::Conflict(current.clone())),
            Some(current) => clock_limit.max(current.version.saturating_add(MAX_AHEAD)),
            None if cells.cells.len() >= limits.cells => return Ok(Applied::RoomFull("cells")),
            None if !cells.sheets.contains(sheet) && cells.sheets.len() >= limits.sheets => {
                return Ok(Applied::RoomFull("sheets"));
            }
            None => clock_limit,
        };
        if edit.version > limit {
            return Ok(Applied::TooFarAhead(limit));
        }
        cells.sheets.insert(key.0.clone());
        cells.cells.insert(key, edit.clone());
        Ok(Applied::Accepted(edit))
    }

    /// Forgets the cells of rooms this node no longer has a connection in (single node only; in
    /// Redis the cells are shared and expire).
    pub fn evict_unused(&self, in_use: impl Fn(&str) -> bool) {
        let mut rooms = self.local.lock();
        if !rooms.is_empty() {
            let before = rooms.len();
            rooms.retain(|room, _| in_use(room));
            if rooms.len() < before {
                tracing::debug!(rooms = before - rooms.len(), "forgot the cells of rooms nobody is in");
            }
        }
    }
}
