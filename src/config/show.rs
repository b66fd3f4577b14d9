//! `herald --print-config`: the merged configuration as TOML, secrets masked, each value followed
//! by the source that set it.
//!
//! Masking works on names and shapes rather than on a list of today's keys, so a section added
//! later (its `secret`, a password in its URL) is masked without anyone remembering to.

use toml::{Table, Value};

use super::Config;
use super::load::Sources;

/// What a masked secret is shown as.
pub const MASK: &str = "********";

/// Why the configuration could not be shown.
#[derive(Debug, thiserror::Error)]
#[error("rendering the configuration: {0}")]
pub struct ShowError(#[from] toml::ser::Error);

/// The configuration as TOML with secrets masked and, after each value, a comment naming its
/// source (`# default`, `# /etc/herald.toml`, `# environment variable HERALD_API_KEY`, `# --set …`).
pub fn render(config: &Config, sources: &Sources) -> Result<String, ShowError> {
    let mut table = Table::try_from(config)?;
    mask_table(&mut table, false);
    let mut out = String::from("# The merged configuration; secrets are shown as \"********\".\n");
    out.push_str("# After each value: where it came from.\n");
    render_table(&mut out, &mut Vec::new(), &table, sources)?;
    Ok(out)
}

/// The configuration as TOML with secrets masked, without sources.
pub fn masked(config: &Config) -> Result<Table, ShowError> {
    let mut table = Table::try_from(config)?;
    mask_table(&mut table, false);
    Ok(table)
}

/// The dotted keys whose values differ between `old` and `new` (arrays count as one key).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    fn flatten(prefix: &str, table: &Table, out: &mut Vec<(String, Value)>) {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                Value::Table(sub) => flatten(&path, sub, out),
                other => out.push((path, other.clone())),
            }
        }
    }
    let (Ok(old), Ok(new)) = (Table::try_from(old), Table::try_from(new)) else { return Vec::new() };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &old, &mut a);
    flatten("", &new, &mut b);
    let a: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let mut keys: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A key whose value is a secret by its name alone.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "key" | "secret" | "password" | "token" | "encryption_key" | "app_secret")
        || key.ends_with("_secret")
        || key.ends_with("_password")
        || key.ends_with("_token")
}

/// A table whose every value is a secret (keys by id).
fn is_secret_table(key: &str) -> bool {
    key.eq_ignore_ascii_case("encryption_keys") || key.ends_with("_secrets")
}

fn mask_table(table: &mut Table, all_secret: bool) {
    for (key, value) in table.iter_mut() {
        let secret = all_secret || is_secret_key(key);
        if is_secret_table(key) {
            mask_value(value, true);
        } else {
            mask_value(value, secret);
        }
    }
}

fn mask_value(value: &mut Value, secret: bool) {
    match value {
        Value::String(s) if secret && !s.is_empty() => *s = MASK.into(),
        Value::String(s) => {
            if let Some(masked) = mask_url_password(s) {
                *s = masked;
            }
        }
        Value::Integer(_) if secret => *value = Value::String(MASK.into()),
        Value::Array(items) => items.iter_mut().for_each(|item| mask_value(item, secret)),
        Value::Table(table) => mask_table(table, secret),
        _ => {}
    }
}

/// `text` with a URL password masked, for logs.
pub fn mask_url(text: &str) -> String {
    mask_url_password(text).unwrap_or_else(|| text.to_string())
}

/// `redis://:hunter2@host/0` → `redis://:********@host/0`; `None` for text that is not a URL
/// or has no password.
fn mask_url_password(text: &str) -> Option<String> {
    if !text.contains('@') || !text.contains("://") {
        return None;
    }
    let mut url = url::Url::parse(text).ok()?;
    url.password()?;
    url.set_password(Some(MASK)).ok()?;
    Some(url.to_string())
}

/// Writes `table` at `path`: plain values first (each with its source), then sub-tables, then
/// arrays of tables, as TOML requires.
fn render_table(out: &mut String, path: &mut Vec<String>, table: &Table, sources: &Sources) -> Result<(), ShowError> {
    for (key, value) in table {
        if value.is_table() || is_array_of_tables(value) {
            continue;
        }
        path.push(key.clone());
        let source = sources.of(&path.join(".")).unwrap_or_default();
        path.pop();
        out.push_str(&format!("{} = {}  # {source}\n", toml_key(key), inline(value)?));
    }
    for (key, value) in table {
        let Value::Table(sub) = value else { continue };
        path.push(key.clone());
        out.push_str(&format!("\n[{}]\n", path.iter().map(|k| toml_key(k)).collect::<Vec<_>>().join(".")));
        render_table(out, path, sub, sources)?;
        path.pop();
    }
    for (key, value) in table {
        let Value::Array(items) = value else { continue };
        if !is_array_of_tables(value) {
            continue;
        }
        path.push(key.clone());
        // Arrays are replaced whole when sources merge, so the array's source is every item's.
        let source = sources.of(&path.join(".")).unwrap_or_default();
        let header = path.iter().map(|k| toml_key(k)).collect::<Vec<_>>().join(".");
        for item in items {
            let Value::Table(item) = item else { continue };
            out.push_str(&format!("\n[[{header}]]  # {source}\n"));
            // Items are shown as TOML without per-key sources (their keys are not addressable
            // by path in the merged sources).
            let mut wrapper = Table::new();
            wrapper.insert("item".into(), Value::Table(item.clone()));
            let text = toml::to_string(&wrapper)?;
            out.push_str(text.trim_start_matches("[item]\n").replace("[item.", &format!("[{header}.")).as_str());
        }
        path.pop();
    }
    Ok(())
}

fn is_array_of_tables(value: &Value) -> bool {
    matches!(value, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_table))
}

/// A value on one line, as TOML writes it.
fn inline(value: &Value) -> Result<String, ShowError> {
    let mut wrapper = Table::new();
    wrapper.insert("v".into(), value.clone());
    let text = toml::to_string(&wrapper)?;
    Ok(text.trim_end().trim_start_matches("v = ").to_string())
}

/// A key as TOML needs it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_text(toml_text: &str) -> String {
        let config = crate::config::from_toml_str(toml_text).unwrap();
        toml::to_string(&masked(&config).unwrap()).unwrap()
    }

    #[test]
    fn secrets_are_masked_by_name_and_in_urls() {
        let text = masked_text(
            r#"
            [api]
            key = "api-key-secret-1"
            [auth]
            jwt_secret = "jwt-secret-value-2"
            [database]
            url = "postgres://herald:pg-password-3@db:5432/herald"
            encryption_key = "encryption-key-4"
            encryption_keys = { old = "rotated-key-5" }
            [redis]
            url = "redis://:redis-password-6@cache:6379/0"
            cluster_nodes = ["redis://user:cluster-password-7@n2:6379"]
            [upstream]
            webhook_url = "https://hooks.example/in"
            webhook_secret = "webhook-secret-8"
            "#,
        );
        for secret in ["api-key-secret-1", "jwt-secret-value-2", "pg-password-3", "encryption-key-4", "rotated-key-5"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        for secret in ["redis-password-6", "cluster-password-7", "webhook-secret-8"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        // What is not secret stays readable.
        assert!(text.contains("postgres://herald:********@db:5432/herald"), "{text}");
        assert!(text.contains("redis://:********@cache:6379/0"), "{text}");
        assert!(text.contains("https://hooks.example/in"), "{text}");
        assert!(text.contains("key_prefix = \"herald\""), "{text}");
    }

    /// What `--print-config` prints reads back as the same configuration (secrets aside), for
    /// every shipped profile: arrays of tables, nested tables and inline values all survive.
    #[test]
    fn printed_profiles_read_back_the_same() {
        for (name, text) in [
            ("campaign-events", include_str!("../../examples/campaign-events.toml")),
            ("job-updates", include_str!("../../examples/job-updates.toml")),
            ("manufacturing-chat", include_str!("../../examples/manufacturing-chat.toml")),
            ("message-dashboard", include_str!("../../examples/message-dashboard.toml")),
            ("spreadsheet", include_str!("../../examples/spreadsheet.toml")),
        ] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
            let overrides = crate::config::Overrides {
                config_file: Some(file.path().into()),
                sets: vec![("auth.jwt_secret".into(), "a-test-secret-of-32-characters!!".into())],
                ..Default::default()
            };
            let (config, sources) = crate::config::load_with_sources(&overrides).unwrap();
            let printed = render(&config, &sources).unwrap();
            let mut back: Config = toml::from_str(&printed).unwrap_or_else(|e| panic!("{name}: {e}\n{printed}"));
            back.auth.jwt_secret = config.auth.jwt_secret.clone();
            back.api.key = config.api.key.clone();
            back.database.encryption_key = config.database.encryption_key.clone();
            back.database.encryption_keys = config.database.encryption_keys.clone();
            back.upstream.webhook_secret = config.upstream.webhook_secret.clone();
            assert_eq!(changed_keys(&config, &back), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn urls_without_passwords_are_left_alone() {
        assert_eq!(mask_url_password("redis://cache:6379"), None);
        assert_eq!(mask_url_password("sqlite://herald.db"), None);
        assert_eq!(mask_url_password("not a url @ all"), None);
    }
}
