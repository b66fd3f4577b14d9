//! Collaborative cells: an edit is applied only if its version is newer than the cell's current
//! one. The comparison and the write are one step: a Lua script in Redis (so two nodes cannot both
//! win), a locked map on a single node.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::node::Node;

/// How long Redis keeps a cell's latest version.
const CELL_TTL_SECS: u64 = 7 * 86_400;

/// Compare-and-set: accept when there is no cell or the new version is greater.
const APPLY_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and decoded['version'] and tonumber(ARGV[1]) <= tonumber(decoded['version']) then
    return {0, current}
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return {1, ARGV[2]}
"#;

/// A cell's content and who last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Value.
    pub value: Value,
    /// Formula, if any.
    pub formula: Option<String>,
    /// Version (the spreadsheet document uses millisecond timestamps).
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
}

/// Why an edit could not be decided.
#[derive(Debug, thiserror::Error)]
#[error("the cell store is unavailable: {0}")]
pub struct CellError(String);

/// Cells of this node (used without Redis).
#[derive(Default)]
pub struct Cells {
    local: Mutex<HashMap<(String, String), Cell>>,
}

impl Cells {
    /// Applies an edit if it is newer than the cell.
    pub async fn apply(&self, node: &Node, sheet: &str, cell_id: &str, edit: Cell) -> Result<Applied, CellError> {
        if let Some(redis) = node.broker.redis() {
            let key = format!("{}:cell:{sheet}:{cell_id}", redis.key_prefix());
            let json = serde_json::to_string(&edit).map_err(|e| CellError(e.to_string()))?;
            let (accepted, stored): (i64, String) = redis
                .query_as(
                    redis::cmd("EVAL")
                        .arg(APPLY_SCRIPT)
                        .arg(1)
                        .arg(&key)
                        .arg(edit.version)
                        .arg(&json)
                        .arg(CELL_TTL_SECS),
                )
                .await
                .map_err(|e| CellError(e.to_string()))?;
            let stored: Cell = serde_json::from_str(&stored).map_err(|e| CellError(e.to_string()))?;
            return Ok(if accepted == 1 { Applied::Accepted(stored) } else { Applied::Conflict(stored) });
        }
        let mut cells = self.local.lock();
        let key = (sheet.to_string(), cell_id.to_string());
        match cells.get(&key) {
            Some(current) if edit.version <= current.version => Ok(Applied::Conflict(current.clone())),
            _ => {
                cells.insert(key, edit.clone());
                Ok(Applied::Accepted(edit))
            }
        }
    }
}
