//! Per-channel reshaping of events (`[channels.shape]`): set the `type`, copy or lift fields
//! from paths such as `data.status`, rename and drop fields. Applied once per event in
//! `Publisher::prepare`, before the payload is serialized, so it never costs anything per recipient.

use serde_json::{Map, Value};

use crate::config::ShapeConfig;

/// A compiled `[channels.shape]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    kind: Option<String>,
    rename: Vec<(String, String)>,
    copy: Vec<(String, Vec<Vec<String>>)>,
    lift: Vec<(String, Vec<Vec<String>>)>,
    drop: Vec<String>,
}

fn split(paths: &crate::config::ShapePaths) -> Vec<Vec<String>> {
    paths.as_slice().iter().map(|p| p.split('.').map(String::from).collect()).collect()
}

fn get<'a>(event: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut object = event;
    for key in parents {
        object = object.get(key)?.as_object()?;
    }
    object.get(last)
}

fn take(event: &mut Map<String, Value>, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut object = event;
    for key in parents {
        object = object.get_mut(key)?.as_object_mut()?;
    }
    object.shift_remove(last)
}

impl Shape {
    /// Compiles a validated configuration.
    pub fn new(config: &ShapeConfig) -> Self {
        Shape {
            kind: config.kind.clone(),
            rename: config.rename.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            copy: config.copy.iter().map(|(f, p)| (f.clone(), split(p))).collect(),
            lift: config.lift.iter().map(|(f, p)| (f.clone(), split(p))).collect(),
            drop: config.drop.clone(),
        }
    }

    /// The `type` this shape sets on every event, if any.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// Reshapes one event. The `type`, when the shape sets it, is left to the caller, which puts
    /// it first.
    pub fn apply(&self, mut event: Map<String, Value>) -> Map<String, Value> {
        for (from, to) in &self.rename {
            if let Some(value) = event.shift_remove(from) {
                event.insert(to.clone(), value);
            }
        }
        for (field, paths) in &self.copy {
            if let Some(value) = paths.iter().find_map(|p| get(&event, p)).cloned() {
                event.insert(field.clone(), value);
            }
        }
        for (field, paths) in &self.lift {
            if let Some(value) = paths.iter().find_map(|p| take(&mut event, p)) {
                event.insert(field.clone(), value);
            }
        }
        for field in &self.drop {
            event.shift_remove(field);
        }
        if self.kind.is_some() {
            event.shift_remove("type");
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(toml: &str) -> Shape {
        Shape::new(&toml::from_str::<ShapeConfig>(toml).unwrap())
    }

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else { unreachable!() };
        map
    }

    #[test]
    fn lifts_status_from_data_and_drops_the_routing_field() {
        let s = shape(
            r#"type = "job_update"
               copy = { status = ["status", "data.status"], job_id = ["job_id", "data.job_id"] }
               drop = ["event"]"#,
        );
        let worker = json!({"event": "job_update", "job_id": "j1", "timestamp": 1,
                            "data": {"job_id": "j1", "status": "completed"}});
        let out = Value::Object(s.apply(object(worker)));
        assert_eq!(out["status"], "completed");
        assert_eq!(out["data"]["status"], "completed", "copy keeps the source");
        assert!(out.get("event").is_none());
        assert!(out.get("type").is_none(), "the caller sets the type");
        // A top-level status wins over data.status (the first path present).
        let cli = json!({"job_id": "test-123", "status": "failed", "data": {"success": true}});
        let out = Value::Object(s.apply(object(cli)));
        assert_eq!(out["status"], "failed");
        assert_eq!(out["job_id"], "test-123");
    }

    #[test]
    fn lift_moves_rename_renames_and_absent_paths_add_nothing() {
        let s = shape(
            r#"lift = { status = "data.status" }
               rename = { event = "kind" }
               copy = { missing = "a.b.c" }"#,
        );
        let out = Value::Object(s.apply(object(json!({"event": "e", "data": {"status": "ok", "x": 1}, "a": 3}))));
        assert_eq!(out, json!({"data": {"x": 1}, "a": 3, "kind": "e", "status": "ok"}));
    }
}
