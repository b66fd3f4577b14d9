//! Configuration of authentication, access rules, rate limits, TLS and the audit log.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, text};

/// Whether an endpoint needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anonymous connections (`client_id`, self-asserted `user_id`), as the campaign-events,
    /// job-updates and message-dashboard profiles run.
    #[default]
    Off,
    /// A token is verified when given; connections without one are anonymous.
    Optional,
    /// Connections without a valid token are refused.
    Required,
}

/// What happens when a connected client's token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicy {
    /// Close the connection (4003) when the token expires.
    #[default]
    Disconnect,
    /// Ask the client for a new token (`token_expiring`) before expiry; close if none arrives.
    Refresh,
}

/// How a refused upgrade is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectStyle {
    /// Accept the upgrade, send `AUTHENTICATION_FAILED`, close with 1008: browsers see the reason.
    #[default]
    Close,
    /// Answer HTTP 401 before the upgrade.
    Http,
}

/// Token verification.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The default for endpoints that do not say.
    pub mode: AuthMode,
    /// HS256/384/512 shared secret (`HERALD_JWT_SECRET`, the compatibility profiles' `JWT_SECRET_KEY`).
    #[serde(deserialize_with = "text::opt_string")]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/384/512, PS256/384/512, ES256/384.
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (keys chosen by `kid`).
    pub jwks_file: Option<PathBuf>,
    /// Accepted `iss` values; when set, a token must carry one of them. Empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; when set, a token must carry one of them. Empty: not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Claim holding the user id.
    pub user_claim: String,
    /// Claim holding the display name.
    pub name_claim: String,
    /// Claim holding the e-mail address.
    pub email_claim: String,
    /// Claim holding the roles (an array of strings, or one string).
    pub roles_claim: String,
    /// What happens when a connected token expires.
    pub on_expiry: ExpiryPolicy,
    /// With `refresh`: how long before expiry the client is asked for a new token.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub refresh_ahead: Duration,
    /// How a refused upgrade is answered.
    pub reject: RejectStyle,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            jwt_secret: None,
            public_key_file: None,
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            user_claim: "sub".into(),
            name_claim: "name".into(),
            email_claim: "email".into(),
            roles_claim: "roles".into(),
            on_expiry: ExpiryPolicy::Disconnect,
            refresh_ahead: Duration::from_secs(30),
            reject: RejectStyle::Close,
        }
    }
}

/// Who may do what to rooms and channels.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// The decision when no rule matches a name.
    pub default: AccessDefault,
    /// Rules, first match wins.
    pub rules: Vec<AccessRuleConfig>,
    /// URL of the backend check (`POST {user, room|channel, action, claims}` → `{"allow": bool}`).
    pub backend_url: Option<String>,
    /// How long a backend decision is cached.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub backend_cache_ttl: Duration,
    /// How long the backend may take; a timeout refuses.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub backend_timeout: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            default: AccessDefault::Allow,
            rules: Vec::new(),
            backend_url: None,
            backend_cache_ttl: Duration::from_secs(60),
            backend_timeout: Duration::from_secs(2),
        }
    }
}

/// The decision for names no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessDefault {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
}

/// What a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    /// Rooms (join, chat, history, presence).
    Room,
    /// Channels (subscribe).
    Channel,
}

impl NameKind {
    /// `"room"` or `"channel"`, as messages, logs and field names say it.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Room => "room",
            NameKind::Channel => "channel",
        }
    }
}

/// One access rule: a name pattern and who it lets in. Any allowance suffices.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccessRuleConfig {
    /// Name pattern: literal text, `{capture}` (one or more characters up to the next literal
    /// character of the pattern), and `*` (anything).
    pub pattern: String,
    /// What it applies to; both rooms and channels when empty.
    pub applies_to: Vec<NameKind>,
    /// Anyone, even anonymous.
    pub public: bool,
    /// Any authenticated user.
    pub authenticated: bool,
    /// Users holding any of these roles.
    pub roles: Vec<String>,
    /// These users (templates: `"{a}"` is the captured `a`).
    pub users: Vec<String>,
    /// Users whose token claim contains (or equals) a value.
    pub claims: Vec<ClaimCondition>,
    /// Ask `access.backend_url`.
    pub backend: bool,
    /// Refuse outright (for a name that must never be reachable).
    pub deny: bool,
}

/// A claim condition: the claim (array or scalar) contains the rendered value.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCondition {
    /// Claim name (`order_ids`).
    pub claim: String,
    /// Value template (`"{id}"`).
    pub contains: String,
}

/// TLS for `https://` and `wss://`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// The audit log.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Append audit records, one JSON object per line, to this file. Without it they go to the
    /// main log under the `herald::audit` target.
    pub file: Option<PathBuf>,
}

/// Parses an address or CIDR range (`127.0.0.1`, `10.0.0.0/8`, `::1`).
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A list of IP addresses and CIDR ranges (`server.trusted_proxies`, `api.allowed_ips`,
/// `ingest.allowed_ips`), parsed once when the configuration is read, so that a request checks
/// its address against ready networks. Written and shown as it was given (a list of strings);
/// an entry that is not an address or range is kept as text for `Config::validate` to name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList {
    entries: Vec<String>,
    nets: Vec<ipnet::IpNet>,
}

impl NetList {
    /// Whether no entry was given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The entries that are not an address or a range, with their positions.
    pub fn invalid(&self) -> impl Iterator<Item = (usize, &str)> {
        self.entries.iter().enumerate().filter(|(_, e)| parse_net(e).is_none()).map(|(i, e)| (i, e.as_str()))
    }
}

impl From<Vec<String>> for NetList {
    fn from(entries: Vec<String>) -> NetList {
        let nets = entries.iter().filter_map(|e| parse_net(e)).collect();
        NetList { entries, nets }
    }
}

impl Serialize for NetList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NetList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NetList, D::Error> {
        Vec::<String>::deserialize(deserializer).map(NetList::from)
    }
}

/// Capture names of an access pattern, or a description of what is wrong with it.
pub fn pattern_captures(pattern: &str) -> Result<Vec<String>, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    crate::protocol::template::check(pattern)?;
    let mut names = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has an unclosed '{'")?;
        names.push(after[..close].to_string());
        rest = &after[close + 1..];
        if rest.starts_with('{') {
            return Err("has two captures in a row; separate them with a literal character".into());
        }
    }
    Ok(names)
}

impl super::Config {
    /// Checks the security sections; called from [`super::Config::validate`].
    pub(super) fn validate_security(&self, problem: &mut dyn FnMut(String, &str)) {
        let modes = std::iter::once(self.auth.mode).chain(self.endpoints.iter().filter_map(|e| e.auth));
        let auth_used = modes.into_iter().any(|m| m != AuthMode::Off);
        let has_key =
            self.auth.jwt_secret.is_some() || self.auth.public_key_file.is_some() || self.auth.jwks_file.is_some();
        if auth_used && !has_key {
            problem(
                "auth".into(),
                "authentication is required or optional somewhere, but none of auth.jwt_secret, auth.public_key_file or auth.jwks_file is set",
            );
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 8
        {
            problem("auth.jwt_secret".into(), "must be at least 8 characters (32 or more is recommended)");
        }
        for (key, path) in
            [("auth.public_key_file", &self.auth.public_key_file), ("auth.jwks_file", &self.auth.jwks_file)]
        {
            if let Some(path) = path
                && !path.is_file()
            {
                problem(key.into(), &format!("{} is not a readable file", path.display()));
            }
        }
        for (key, claim) in [
            ("auth.user_claim", &self.auth.user_claim),
            ("auth.name_claim", &self.auth.name_claim),
            ("auth.email_claim", &self.auth.email_claim),
            ("auth.roles_claim", &self.auth.roles_claim),
        ] {
            if claim.is_empty() {
                problem(key.into(), "must name a claim");
            }
        }

        if let Some(url) = &self.access.backend_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problem("access.backend_url".into(), "must be an http:// or https:// URL");
        }
        for (i, rule) in self.access.rules.iter().enumerate() {
            let key = format!("access.rules[{i}]");
            let captures = match pattern_captures(&rule.pattern) {
                Ok(captures) => captures,
                Err(e) => {
                    problem(format!("{key}.pattern"), &e);
                    continue;
                }
            };
            let templates = rule.users.iter().chain(rule.claims.iter().map(|c| &c.contains));
            for template in templates {
                for name in pattern_captures(template).unwrap_or_default() {
                    if !captures.contains(&name) {
                        problem(
                            key.clone(),
                            &format!("uses {{{name}}}, which pattern {:?} does not capture", rule.pattern),
                        );
                    }
                }
            }
            if rule.backend && self.access.backend_url.is_none() {
                problem(key.clone(), "asks the backend, but access.backend_url is not set");
            }
            let allows = rule.public || rule.authenticated || !rule.roles.is_empty() || !rule.users.is_empty();
            if !(allows || !rule.claims.is_empty() || rule.backend || rule.deny) {
                problem(
                    key.clone(),
                    "lets nobody in; give an allowance (public, authenticated, roles, users, claims, backend) or set deny = true",
                );
            }
            if rule.deny && (allows || !rule.claims.is_empty() || rule.backend) {
                problem(key.clone(), "sets deny = true together with allowances; choose one");
            }
            for claim in &rule.claims {
                if claim.claim.is_empty() {
                    problem(key.clone(), "has a claim condition without a claim name");
                }
            }
        }

        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(cert), Some(key)) => {
                for (name, path) in [("tls.cert_file", cert), ("tls.key_file", key)] {
                    if !path.is_file() {
                        problem(name.into(), &format!("{} is not a readable file", path.display()));
                    }
                }
            }
            (None, None) => {}
            _ => problem("tls".into(), "set both tls.cert_file and tls.key_file, or neither"),
        }

        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://")) && !origin.ends_with('/'));
            if !ok {
                problem(
                    format!("server.allowed_origins[{i}]"),
                    "must be \"*\" or an origin such as https://app.example.com",
                );
            }
        }
        for (key, list) in [
            ("server.trusted_proxies", &self.server.trusted_proxies),
            ("api.allowed_ips", &self.api.allowed_ips),
            ("ingest.allowed_ips", &self.ingest.allowed_ips),
        ] {
            for (i, _) in list.invalid() {
                problem(format!("{key}[{i}]"), "must be an IP address or a CIDR range such as 10.0.0.0/8");
            }
        }
        match (&self.ingest.access, &self.ingest.key) {
            (super::IngestAccess::Key, None) => {
                problem("ingest.key".into(), "is required with ingest.access = \"key\"")
            }
            (_, Some(key)) if key.len() < 8 => problem("ingest.key".into(), "must be at least 8 characters"),
            _ => {}
        }
        if (self.limits.messages_per_minute > 0 || self.limits.messages_per_hour > 0)
            && self.limits.block_duration.is_zero()
        {
            problem("limits.block_duration".into(), "must be longer than zero while message rates are limited");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_net_list_is_parsed_once_and_shown_as_written() {
        let list: NetList = serde_json::from_str(r#"["10.0.0.0/8", "::1", "192.168.1.7", "nope"]"#).unwrap();
        assert!(list.contains(&"10.1.2.3".parse().unwrap()));
        assert!(list.contains(&"::1".parse().unwrap()));
        assert!(list.contains(&"192.168.1.7".parse().unwrap()));
        assert!(!list.contains(&"192.168.1.8".parse().unwrap()));
        assert_eq!(list.invalid().collect::<Vec<_>>(), vec![(3, "nope")]);
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["10.0.0.0/8","::1","192.168.1.7","nope"]"#);
    }
}
