//! Room and channel access: the one place that decides who may do what to a name. Joining,
//! subscribing, writing into a room, reading history and presence, and every REST read ask it.
//!
//! Rules come from `[[access.rules]]`; the first whose pattern matches the name decides. A rule
//! allows when any of its allowances holds. Only identities proven by a token count: a
//! self-asserted `user_id` is anonymous here. A rule may defer to the application's backend (an
//! HTTP call whose answers are cached for `access.backend_cache_ttl`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use regex::Regex;
use serde::Serialize;
use serde_json::{Value, json};

use super::Identity;
use crate::config::{AccessConfig, AccessDefault, AccessRuleConfig, NameKind};
use crate::protocol::template;

/// What is being done to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Subscribe to a channel.
    Subscribe,
    /// Join a room.
    Join,
    /// Write into a room (chat, typing, edits).
    Publish,
    /// Read history, members, presence.
    Read,
}

impl Action {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Join => "join",
            Action::Publish => "publish",
            Action::Read => "read",
        }
    }
}

/// Why access was refused; safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {reason}")]
pub struct Denied {
    /// For people.
    pub reason: String,
}

struct Rule {
    pattern: Regex,
    segments: Vec<Segment>,
    source: String,
    applies_to: Vec<NameKind>,
    config: AccessRuleConfig,
}

impl Rule {
    /// Whether the rule speaks for names of `kind` (no `applies_to`: for every kind).
    fn applies(&self, kind: NameKind) -> bool {
        self.applies_to.is_empty() || self.applies_to.contains(&kind)
    }
}

/// The compiled access policy.
pub struct Policy {
    rules: Vec<Rule>,
    default: AccessDefault,
    backend: Option<Backend>,
}

/// User, kind, name and action of a cached backend decision.
type DecisionKey = (String, NameKind, String, Action);

/// Most backend decisions kept.
const MAX_CACHED_DECISIONS: usize = 100_000;

struct Backend {
    url: String,
    client: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<DecisionKey, (bool, Instant)>>,
}

/// Turns `user_{a}_{b}` into `^user_(?P<a>[^_]+)_(?P<b>.+)$`: a capture takes one or more
/// characters up to the next literal character of the pattern; `*` takes anything. The regex only
/// decides whether the rule applies; conditions on captures are decided over every split of the
/// name ([`Segment::splits`]), since a capture may contain the separator.
fn compile(pattern: &str) -> Result<Regex, String> {
    let mut out = String::from("^");
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let close = after.find('}').ok_or("unclosed '{'")?;
            let name = &after[..close];
            rest = &after[close + 1..];
            match rest.chars().find(|c| *c != '*') {
                Some(next) if !rest.starts_with('*') => {
                    out.push_str(&format!("(?P<{name}>[^{}]+)", regex::escape(&next.to_string())))
                }
                _ => out.push_str(&format!("(?P<{name}>.+)")),
            }
        } else if let Some(after) = rest.strip_prefix('*') {
            out.push_str(".*");
            rest = after;
        } else {
            let next = rest.find(['{', '*']).unwrap_or(rest.len());
            out.push_str(&regex::escape(&rest[..next]));
            rest = &rest[next..];
        }
    }
    out.push('$');
    Regex::new(&out).map_err(|e| e.to_string())
}

/// A piece of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// Literal text.
    Literal(String),
    /// `{name}`: one or more characters.
    Capture(String),
    /// `*`: any characters.
    Star,
}

/// Most splits of one name considered; a pattern with many captures over a long name cannot
/// make a check expensive.
const MAX_SPLITS: usize = 4096;

impl Segment {
    fn parse(pattern: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{')
                && let Some(close) = after.find('}')
            {
                segments.push(Segment::Capture(after[..close].to_string()));
                rest = &after[close + 1..];
            } else if let Some(after) = rest.strip_prefix('*') {
                segments.push(Segment::Star);
                rest = after;
            } else {
                let first = rest.chars().next().map_or(0, char::len_utf8);
                let next = rest[first..].find(['{', '*']).map_or(rest.len(), |i| i + first);
                segments.push(Segment::Literal(rest[..next].to_string()));
                rest = &rest[next..];
            }
        }
        segments
    }

    /// Every assignment of captures under which `name` fits the pattern. A capture may contain
    /// the pattern's own separators (`user_{a}_{b}` over `user_user_1_user_2` has three splits),
    /// so a decision that depends on a capture must hold under *some* split, never just the
    /// first one a regex happens to find.
    fn splits<'s, 'n>(segments: &'s [Segment], name: &'n str) -> Vec<HashMap<&'s str, &'n str>> {
        fn walk<'s, 'n>(
            segments: &'s [Segment],
            name: &'n str,
            at: usize,
            current: &mut Vec<(&'s str, &'n str)>,
            out: &mut Vec<HashMap<&'s str, &'n str>>,
        ) {
            if out.len() >= MAX_SPLITS {
                return;
            }
            let rest = &name[at..];
            let Some((first, others)) = segments.split_first() else {
                if rest.is_empty() {
                    out.push(current.iter().copied().collect());
                }
                return;
            };
            match first {
                Segment::Literal(text) => {
                    if rest.starts_with(text.as_str()) {
                        walk(others, name, at + text.len(), current, out);
                    }
                }
                Segment::Capture(capture) => {
                    for (i, c) in rest.char_indices() {
                        let end = i + c.len_utf8();
                        current.push((capture.as_str(), &rest[..end]));
                        walk(others, name, at + end, current, out);
                        current.pop();
                    }
                }
                Segment::Star => {
                    let ends = std::iter::once(0).chain(rest.char_indices().map(|(i, c)| i + c.len_utf8()));
                    for end in ends {
                        walk(others, name, at + end, current, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(segments, name, 0, &mut Vec::new(), &mut out);
        out
    }
}

impl Policy {
    /// Compiles the configured rules (already validated with the configuration).
    pub fn new(config: &AccessConfig) -> Result<Policy, String> {
        let mut rules = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let pattern = compile(&rule.pattern).map_err(|e| format!("access.rules[{i}].pattern: {e}"))?;
            rules.push(Rule {
                pattern,
                segments: Segment::parse(&rule.pattern),
                source: rule.pattern.clone(),
                applies_to: rule.applies_to.clone(),
                config: rule.clone(),
            });
        }
        let backend = config.backend_url.as_ref().map(|url| Backend {
            url: url.clone(),
            client: reqwest::Client::builder().timeout(config.backend_timeout).build().unwrap_or_default(),
            ttl: config.backend_cache_ttl,
            cache: Mutex::new(HashMap::new()),
        });
        Ok(Policy { rules, default: config.default, backend })
    }

    /// Whether `identity` may do `action` to the room or channel `name`.
    ///
    /// A channel and a room of the same name are one name to the rules: a message posted to
    /// channel `finance` is stored as room `finance`, and history, search and presence serve it
    /// under that room. So besides the rule that decides for `kind`, the first rule that guards
    /// the name only as the other kind (`applies_to` leaves `kind` out) must allow too; what one
    /// rule guards is never reachable under another kind of name.
    pub async fn check(
        &self,
        identity: Option<&Identity>,
        kind: NameKind,
        name: &str,
        action: Action,
    ) -> Result<(), Denied> {
        self.check_kind(identity, kind, name, action).await?;
        for other in [NameKind::Room, NameKind::Channel].into_iter().filter(|k| *k != kind) {
            let guard = self.rules.iter().find(|r| r.applies(other) && r.pattern.is_match(name));
            if guard.is_some_and(|r| !r.applies(kind)) {
                self.check_kind(identity, other, name, action).await?;
            }
        }
        Ok(())
    }

    /// The decision of the first rule for `kind` that matches `name` (or the default).
    async fn check_kind(
        &self,
        identity: Option<&Identity>,
        kind: NameKind,
        name: &str,
        action: Action,
    ) -> Result<(), Denied> {
        let rule = self.rules.iter().find(|r| r.applies(kind) && r.pattern.is_match(name));
        let Some(rule) = rule else {
            return match self.default {
                AccessDefault::Allow => Ok(()),
                AccessDefault::Deny => Err(Denied { reason: format!("no rule lets anyone into {name:?}") }),
            };
        };
        let c = &rule.config;
        if c.deny {
            return Err(Denied { reason: format!("{name:?} is closed") });
        }
        if c.public {
            return Ok(());
        }
        let Some(user) = identity.filter(|i| i.verified) else {
            return Err(Denied { reason: format!("{name:?} requires an authenticated user") });
        };
        if c.authenticated || c.roles.iter().any(|r| user.roles.contains(r)) {
            return Ok(());
        }
        if !c.users.is_empty() || !c.claims.is_empty() {
            for split in Segment::splits(&rule.segments, name) {
                let lookup = |key: &str| split.get(key).copied();
                if c.users.iter().filter_map(|t| template::render(t, lookup)).any(|u| *u == *user.id) {
                    return Ok(());
                }
                for condition in &c.claims {
                    let Some(wanted) = template::render(&condition.contains, lookup) else { continue };
                    if claim_contains(user.claims.get(&condition.claim), &wanted) {
                        return Ok(());
                    }
                }
            }
        }
        if c.backend
            && let Some(backend) = &self.backend
            && backend.allows(user, kind, name, action).await
        {
            return Ok(());
        }
        Err(Denied { reason: format!("{name:?} is not open to this user (rule {:?})", rule.source) })
    }
}

fn claim_contains(claim: Option<&Value>, wanted: &str) -> bool {
    let matches = |v: &Value| match v {
        Value::String(s) => s == wanted,
        Value::Number(n) => n.to_string() == wanted,
        _ => false,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(matches),
        Some(Value::String(s)) => s == wanted || s.split([' ', ',']).any(|part| part == wanted),
        Some(other) => matches(other),
        None => false,
    }
}

impl Backend {
    async fn allows(&self, user: &Identity, kind: NameKind, name: &str, action: Action) -> bool {
        let key = (user.id.to_string(), kind, name.to_string(), action);
        if let Some((allow, at)) = self.cache.lock().get(&key).copied()
            && at.elapsed() < self.ttl
        {
            return allow;
        }
        let body = json!({
            "user_id": &*user.id,
            "claims": user.claims,
            "kind": kind,
            "name": name,
            "room": (kind == NameKind::Room).then_some(name),
            "channel": (kind == NameKind::Channel).then_some(name),
            "action": action,
        });
        let allow = match self.client.post(&self.url).json(&body).send().await {
            Ok(response) if response.status().is_success() => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("allow").and_then(Value::as_bool))
                .unwrap_or(false),
            Ok(response) => {
                tracing::warn!(status = %response.status(), "access backend refused the check; denying");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "access backend unreachable; denying");
                false
            }
        };
        let mut cache = self.cache.lock();
        if cache.len() > MAX_CACHED_DECISIONS {
            cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
            // Names are the client's choice: when even the fresh answers fill the cache, start
            // over rather than grow without bound (the backend answers again).
            if cache.len() > MAX_CACHED_DECISIONS {
                cache.clear();
            }
        }
        cache.insert(key, (allow, Instant::now()));
        allow
    }
}

/// Shared handle.
pub type SharedPolicy = Arc<Policy>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClaimCondition;

    fn user(id: &str, roles: &[&str], claims: Value) -> Identity {
        let Value::Object(claims) = claims else { panic!() };
        Identity {
            id: Arc::from(id),
            name: None,
            email: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            claims,
            verified: true,
        }
    }

    fn document_001_policy() -> Policy {
        let rule = |pattern: &str| AccessRuleConfig { pattern: pattern.into(), ..Default::default() };
        let config = AccessConfig {
            default: AccessDefault::Deny,
            rules: vec![
                AccessRuleConfig {
                    claims: vec![ClaimCondition { claim: "order_ids".into(), contains: "{id}".into() }],
                    ..rule("order_{id}")
                },
                AccessRuleConfig {
                    claims: vec![ClaimCondition { claim: "quote_ids".into(), contains: "{id}".into() }],
                    ..rule("quote_{id}")
                },
                AccessRuleConfig { users: vec!["{a}".into(), "{b}".into()], ..rule("user_{a}_{b}") },
                AccessRuleConfig {
                    roles: vec!["support".into()],
                    claims: vec![ClaimCondition { claim: "ticket_ids".into(), contains: "{ticket}".into() }],
                    ..rule("support_{ticket}")
                },
                AccessRuleConfig { authenticated: true, ..rule("channel_{name}") },
                AccessRuleConfig { public: true, ..rule("lobby") },
            ],
            ..Default::default()
        };
        Policy::new(&config).unwrap()
    }

    async fn allowed(policy: &Policy, who: Option<&Identity>, room: &str) -> bool {
        policy.check(who, NameKind::Room, room, Action::Join).await.is_ok()
    }

    #[tokio::test]
    async fn every_row_of_document_001s_table() {
        let policy = document_001_policy();
        let customer = user("7", &[], json!({"order_ids": [123, 124], "quote_ids": ["456"], "ticket_ids": [9]}));
        let stranger = user("8", &[], json!({}));
        let agent = user("99", &["support"], json!({}));
        let mut anonymous = user("7", &[], json!({"order_ids": [123]}));
        anonymous.verified = false;

        assert!(allowed(&policy, Some(&customer), "order_123").await);
        assert!(!allowed(&policy, Some(&stranger), "order_123").await);
        assert!(!allowed(&policy, Some(&anonymous), "order_123").await, "a self-asserted identity proves nothing");
        assert!(allowed(&policy, Some(&customer), "quote_456").await);
        assert!(!allowed(&policy, Some(&customer), "quote_457").await);
        assert!(allowed(&policy, Some(&customer), "user_7_8").await);
        assert!(allowed(&policy, Some(&stranger), "user_7_8").await);
        assert!(!allowed(&policy, Some(&agent), "user_7_8").await);
        assert!(allowed(&policy, Some(&customer), "support_9").await);
        assert!(allowed(&policy, Some(&agent), "support_9").await);
        assert!(!allowed(&policy, Some(&stranger), "support_9").await);
        assert!(allowed(&policy, Some(&stranger), "channel_general").await);
        assert!(!allowed(&policy, None, "channel_general").await);
        assert!(allowed(&policy, None, "lobby").await);
        assert!(!allowed(&policy, Some(&customer), "elsewhere").await, "default deny");
    }

    #[tokio::test]
    async fn a_rule_for_one_kind_guards_the_same_name_under_the_other() {
        let config = AccessConfig {
            default: AccessDefault::Allow,
            rules: vec![AccessRuleConfig {
                pattern: "finance*".into(),
                applies_to: vec![NameKind::Channel],
                roles: vec!["finance".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let policy = Policy::new(&config).unwrap();
        let clerk = user("c", &["finance"], json!({}));
        let stranger = user("s", &[], json!({}));
        for kind in [NameKind::Channel, NameKind::Room] {
            assert!(policy.check(Some(&clerk), kind, "finance", Action::Read).await.is_ok());
            assert!(policy.check(Some(&stranger), kind, "finance-q3", Action::Read).await.is_err(), "{kind:?}");
        }
        assert!(policy.check(Some(&stranger), NameKind::Room, "lobby", Action::Join).await.is_ok());

        // And the other way round; a rule for both kinds decides alone, first match winning.
        let config = AccessConfig {
            default: AccessDefault::Allow,
            rules: vec![
                AccessRuleConfig { pattern: "vault_open".into(), public: true, ..Default::default() },
                AccessRuleConfig {
                    pattern: "vault*".into(),
                    applies_to: vec![NameKind::Room],
                    users: vec!["c".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let policy = Policy::new(&config).unwrap();
        assert!(policy.check(Some(&stranger), NameKind::Channel, "vault_1", Action::Subscribe).await.is_err());
        assert!(policy.check(Some(&clerk), NameKind::Channel, "vault_1", Action::Subscribe).await.is_ok());
        assert!(policy.check(Some(&stranger), NameKind::Channel, "vault_open", Action::Subscribe).await.is_ok());
    }

    #[test]
    fn patterns_compile_to_anchored_regexes() {
        let r = compile("user_{a}_{b}").unwrap();
        let c = r.captures("user_12_34").unwrap();
        assert_eq!((&c["a"], &c["b"]), ("12", "34"));
        assert!(!r.is_match("xuser_1_2"));
        assert!(compile("campaign:*").unwrap().is_match("campaign:123"));
        assert!(!compile("order_{id}").unwrap().is_match("order_"));
        assert!(compile("a.b").unwrap().is_match("a.b") && !compile("a.b").unwrap().is_match("axb"));
    }

    #[test]
    fn every_split_of_a_name_is_listed() {
        let segments = Segment::parse("user_{a}_{b}");
        let splits = Segment::splits(&segments, "user_user_1_user_2");
        let pairs: Vec<(&str, &str)> = splits.iter().map(|s| (s["a"], s["b"])).collect();
        assert_eq!(pairs, [("user", "1_user_2"), ("user_1", "user_2"), ("user_1_user", "2")]);
        assert!(Segment::splits(&segments, "user_x").is_empty());
        assert_eq!(Segment::splits(&Segment::parse("a*b"), "axxb").len(), 1);
        let long = "x_".repeat(100);
        assert!(Segment::splits(&Segment::parse("{a}_{b}_{c}_{d}"), &long).len() <= MAX_SPLITS);
    }

    #[tokio::test]
    async fn direct_message_rooms_admit_ids_that_contain_the_separator() {
        let policy = document_001_policy();
        let first = user("user_1", &[], json!({}));
        let second = user("user_2", &[], json!({}));
        let other = user("user_3", &[], json!({}));
        assert!(allowed(&policy, Some(&first), "user_user_1_user_2").await);
        assert!(allowed(&policy, Some(&second), "user_user_1_user_2").await);
        assert!(!allowed(&policy, Some(&other), "user_user_1_user_2").await);
    }

    #[test]
    fn claims_match_arrays_scalars_and_numbers() {
        assert!(claim_contains(Some(&json!([1, 2])), "2"));
        assert!(claim_contains(Some(&json!("a b")), "b"));
        assert!(claim_contains(Some(&json!(5)), "5"));
        assert!(!claim_contains(Some(&json!({"x": 1})), "1"));
        assert!(!claim_contains(None, "1"));
    }
}
