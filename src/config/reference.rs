//! The configuration reference of the book (`docs/book/src/configuration.md`), generated from
//! the typed configuration: the keys and types from the JSON Schema derived on [`Config`], the
//! text from the doc comments, the defaults from [`Config::default`]. A test fails when the
//! committed page differs from what this renders; `scripts/docs` rewrites it.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Config;

/// Where the book keeps the generated page, relative to the repository.
pub const PAGE: &str = "docs/book/src/configuration.md";

/// The configuration reference as Markdown.
pub fn render() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut out = String::from(
        "<!-- Generated from src/config by `scripts/docs` (src/config/reference.rs). Do not edit: \
         change the doc comments and defaults in the code. -->\n\n\
         # Configuration reference\n\n\
         Every key of Herald's TOML configuration, with its type and default. A configuration file \
         needs only the keys it changes. Each key can also be set by an environment variable: \
         `HERALD_` followed by the section and key in capitals joined by `__` (for example \
         `HERALD_SERVER__LISTEN=0.0.0.0:8000`), and `herald --print-config` shows every value \
         with where it came from. Durations are written like `30s`, `5m` or `1h 30m`; \
         `herald check-config FILE` checks a file without starting a node.\n",
    );
    let Some(sections) = schema.get("properties").and_then(Value::as_object) else { return out };
    for (name, property) in sections {
        section(&mut out, name, property, defaults.get(name), &defs);
    }
    out
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    // `Option<Table>` is `anyOf: [{$ref}, {type: null}]`: the table is what is documented.
    let optional_ref = ["allOf", "anyOf", "oneOf"].iter().find_map(|key| {
        let options = schema.get(*key)?.as_array()?;
        let mut refs = options.iter().filter_map(|o| o.get("$ref"));
        let only = refs.next()?;
        let rest_null = options.iter().all(|o| o.get("$ref").is_some() || o.get("type") == Some(&Value::from("null")));
        (refs.next().is_none() && rest_null).then_some(only)
    });
    let reference = schema.get("$ref").or(optional_ref).and_then(Value::as_str);
    match reference.and_then(|r| r.strip_prefix("#/$defs/")).and_then(|name| defs.get(name)) {
        Some(target) => target,
        None => schema,
    }
}

fn is_table(schema: &Value) -> bool {
    schema.get("properties").is_some()
}

fn section(out: &mut String, path: &str, property: &Value, default: Option<&Value>, defs: &Map<String, Value>) {
    let target = resolve(property, defs);
    let array_item = (target.get("type") == Some(&Value::from("array")))
        .then(|| target.get("items").map(|items| resolve(items, defs)))
        .flatten()
        .filter(|item| is_table(item));
    let (heading, table, default) = match array_item {
        Some(item) => (format!("[[{path}]]"), item, None),
        None if is_table(target) => (format!("[{path}]"), target, default),
        None => return,
    };
    let _ = write!(out, "\n## `{heading}`\n\n");
    let about = text(property).or_else(|| text(target)).or_else(|| text(table));
    if let Some(about) = about {
        let _ = writeln!(out, "{about}\n");
    }
    if array_item.is_some() {
        let _ = writeln!(out, "A list: each `[[{path}]]` table adds one.\n");
    }
    let Some(keys) = table.get("properties").and_then(Value::as_object) else { return };
    let mut nested = Vec::new();
    let _ = writeln!(out, "| Key | Type | Default | Description |\n|---|---|---|---|");
    for (key, schema) in keys {
        let resolved = resolve(schema, defs);
        let own_default = default.and_then(|d| d.get(key)).or_else(|| schema.get("default"));
        let is_nested =
            is_table(resolved) || resolved.get("items").map(|items| is_table(resolve(items, defs))).unwrap_or(false);
        if is_nested {
            nested.push((key.clone(), schema.clone(), own_default.cloned()));
            let kind = if resolved.get("items").is_some() { "list of tables" } else { "table" };
            let _ = writeln!(
                out,
                "| `{key}` | {kind} | see [`{path}.{key}`](#{}) | {} |",
                anchor(path, key),
                cell(text(schema).or_else(|| text(resolved)))
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {} | {} |",
            type_of(schema, defs),
            own_default.map(show_default).unwrap_or_else(|| "—".into()),
            cell(text(schema).or_else(|| text(resolved))),
        );
    }
    for (key, schema, default) in nested {
        section(out, &format!("{path}.{key}"), &schema, default.as_ref(), defs);
    }
}

fn anchor(path: &str, key: &str) -> String {
    format!("{path}{key}").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>().to_lowercase()
}

fn text(schema: &Value) -> Option<String> {
    schema.get("description").and_then(Value::as_str).map(|d| d.replace('\n', " "))
}

fn cell(text: Option<String>) -> String {
    text.unwrap_or_default().replace('|', "\\|")
}

fn type_of(schema: &Value, defs: &Map<String, Value>) -> String {
    let schema = resolve(schema, defs);
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ");
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let mut shown: Vec<String> = Vec::new();
            let null = Value::from("null");
            let optional = options.iter().any(|o| o.get("type") == Some(&null));
            for option in options.iter().filter(|o| o.get("type") != Some(&null)) {
                let one = match option.get("const") {
                    Some(value) => format!("`{value}`"),
                    None => type_of(option, defs),
                };
                if !shown.contains(&one) {
                    shown.push(one);
                }
            }
            let shown = shown.join(" or ");
            return if optional { format!("{shown} (optional)") } else { shown };
        }
    }
    if let Some(value) = schema.get("const") {
        return format!("`{value}`");
    }
    let kinds: Vec<&str> = match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).filter(|k| *k != "null").collect(),
        _ => vec![],
    };
    let optional = matches!(schema.get("type"), Some(Value::Array(kinds)) if kinds.iter().any(|k| k == "null"));
    let shown = kinds
        .iter()
        .map(|kind| match *kind {
            "array" => {
                format!("list of {}", schema.get("items").map(|i| type_of(i, defs)).unwrap_or_else(|| "values".into()))
            }
            "integer" => "integer".into(),
            "object" => "table".into(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" or ");
    let shown = if shown.is_empty() { "any".to_string() } else { shown };
    if optional { format!("{shown} (optional)") } else { shown }
}

fn show_default(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) if s.is_empty() => "`\"\"`".into(),
        Value::Array(a) if a.is_empty() => "`[]`".into(),
        other => format!("`{}`", other.to_string().replace('|', "\\|")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed page is what the code generates (`HERALD_BLESS=1` rewrites it).
    #[test]
    fn the_book_configuration_page_is_current() {
        let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE);
        let generated = render();
        if std::env::var_os("HERALD_BLESS").is_some() {
            std::fs::write(&page, &generated).expect("write the configuration page");
        }
        let committed = std::fs::read_to_string(&page).unwrap_or_default();
        assert!(
            committed == generated,
            "{PAGE} is out of date with src/config: run scripts/docs (or HERALD_BLESS=1 cargo test --lib \
             config::reference) and commit the result"
        );
    }

    #[test]
    fn every_section_and_a_few_keys_are_there() {
        let page = render();
        for needle in [
            "## `[server]`",
            "## `[[endpoints]]`",
            "## `[[pusher.apps]]`",
            "| `listen` |",
            "| `heartbeat_interval` | string | `\"30s\"` |",
        ] {
            assert!(page.contains(needle), "{needle} missing from the reference:\n{page}");
        }
    }
}
