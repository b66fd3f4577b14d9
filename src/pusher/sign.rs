//! Pusher's signatures: channel authorizations, user sign-in, API requests and webhooks, all
//! hex HMAC-SHA256 with the app secret, compared in constant time.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Hex HMAC-SHA256 of `message` with `secret`.
pub fn hmac_hex(secret: &str, message: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` (hex) is the signature of `message`, in constant time.
pub fn verify_hex(secret: &str, message: &[u8], given: &str) -> bool {
    let expected = hmac_hex(secret, message);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes()))
}

/// Checks a channel authorization `key:signature` over `socket_id:channel[:channel_data]`.
pub fn verify_channel(key: &str, secret: &str, auth: &str, socket_id: &str, channel: &str, data: Option<&str>) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else { return false };
    if !bool::from(given_key.as_bytes().ct_eq(key.as_bytes())) {
        return false;
    }
    let message = match data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    verify_hex(secret, message.as_bytes(), signature)
}

/// Checks a user sign-in `key:signature` over `socket_id::user::user_data`.
pub fn verify_signin(key: &str, secret: &str, auth: &str, socket_id: &str, user_data: &str) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else { return false };
    bool::from(given_key.as_bytes().ct_eq(key.as_bytes()))
        && verify_hex(secret, format!("{socket_id}::user::{user_data}").as_bytes(), signature)
}

/// Why a signed API request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A required parameter is absent.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// `auth_key` is not the app's key.
    #[error("auth_key does not belong to this app")]
    WrongKey,
    /// `auth_version` is not 1.0.
    #[error("unsupported auth_version; use 1.0")]
    Version,
    /// `auth_timestamp` is not a number or too far from the node's clock.
    #[error("auth_timestamp is more than {0} s away from the server's clock")]
    Stale(u64),
    /// `body_md5` does not match the body.
    #[error("body_md5 does not match the request body")]
    BodyMd5,
    /// The signature is wrong.
    #[error("invalid signature: expected HMAC-SHA256 of \"{0}\"")]
    Signature(String),
}

/// Verifies a signed API request: `auth_key`, `auth_timestamp` within `skew` seconds of `now`,
/// `auth_version` 1.0, `body_md5` for a body, and `auth_signature` over
/// `METHOD\npath\nsorted query`.
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now: u64,
    skew: u64,
) -> Result<(), RequestError> {
    let get = |name: &'static str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let auth_key = get("auth_key").ok_or(RequestError::Missing("auth_key"))?;
    let signature = get("auth_signature").ok_or(RequestError::Missing("auth_signature"))?;
    let timestamp = get("auth_timestamp").ok_or(RequestError::Missing("auth_timestamp"))?;
    if !bool::from(auth_key.as_bytes().ct_eq(key.as_bytes())) {
        return Err(RequestError::WrongKey);
    }
    if get("auth_version").is_some_and(|v| v != "1.0") {
        return Err(RequestError::Version);
    }
    let timestamp: u64 = timestamp.parse().map_err(|_| RequestError::Stale(skew))?;
    if timestamp.abs_diff(now) > skew {
        return Err(RequestError::Stale(skew));
    }
    if !body.is_empty() {
        let given = get("body_md5").ok_or(RequestError::Missing("body_md5"))?;
        let actual = hex::encode(<md5::Md5 as md5::Digest>::digest(body));
        if !bool::from(actual.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes())) {
            return Err(RequestError::BodyMd5);
        }
    }
    let signed = string_to_sign(method, path, query);
    if verify_hex(secret, signed.as_bytes(), signature) {
        Ok(())
    } else {
        Err(RequestError::Signature(signed.replace('\n', "\\n")))
    }
}

/// The query string of a signed API request (`auth_key`, `auth_timestamp`, `auth_version`,
/// `body_md5` for a body, `auth_signature`), as a server SDK sends it; for tools and tests.
pub fn signed_query(key: &str, secret: &str, method: &str, path: &str, body: &[u8], timestamp: u64) -> String {
    let mut query: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        query.push(("body_md5".into(), hex::encode(<md5::Md5 as md5::Digest>::digest(body))));
    }
    let signature = hmac_hex(secret, string_to_sign(method, path, &query).as_bytes());
    let mut out: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push(format!("auth_signature={signature}"));
    out.join("&")
}

/// `METHOD\npath\nk1=v1&k2=v2…`: every query parameter but `auth_signature`, keys lowercased and
/// sorted, values as decoded.
pub fn string_to_sign(method: &str, path: &str, query: &[(String, String)]) -> String {
    let sorted: BTreeMap<String, &str> = query
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let params: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\n{path}\n{}", method.to_ascii_uppercase(), params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from Pusher's authentication reference.
    #[test]
    fn channel_signature_matches_the_reference() {
        let (key, secret) = ("278d425bdf160c739803", "7ad3773142a6692b25b8");
        let auth = "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert!(verify_channel(key, secret, auth, "1234.1234", "private-foobar", None));
        assert!(!verify_channel(key, secret, auth, "1234.1235", "private-foobar", None));
        assert!(!verify_channel("other", secret, auth, "1234.1234", "private-foobar", None));
        assert!(!verify_channel(key, secret, "nonsense", "1234.1234", "private-foobar", None));
    }

    // The example from Pusher's HTTP API reference.
    #[test]
    fn request_signature_matches_the_reference() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query: Vec<(String, String)> = [
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            ("auth_signature", "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let verify = |q: &[(String, String)], b: &[u8], now| {
            verify_request("278d425bdf160c739803", "7ad3773142a6692b25b8", "POST", "/apps/3/events", q, b, now, 600)
        };
        assert_eq!(verify(&query, body, 1353088179), Ok(()));
        assert_eq!(verify(&query, body, 1353088179 + 601), Err(RequestError::Stale(600)));
        assert_eq!(verify(&query, b"{}", 1353088179), Err(RequestError::BodyMd5));
        let mut tampered = query.clone();
        tampered[4].1 = "00".repeat(32);
        assert!(matches!(verify(&tampered, body, 1353088179), Err(RequestError::Signature(_))));
    }

    #[test]
    fn signed_queries_verify() {
        let query = signed_query("k", "secret-0123", "POST", "/apps/1/events", b"{}", 1000);
        let parsed: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(verify_request("k", "secret-0123", "POST", "/apps/1/events", &parsed, b"{}", 1000, 600), Ok(()));
    }
}
