//! What a client presents as a token: `presented` (query, `Authorization`, subprotocols), then
//! `Verifier::verify` with an HS256 secret.
//!
//! Input: the first byte picks the mode. Mode 0: the rest is a token as a client sends it (any
//! text), also offered as subprotocols split at commas. Mode 1: the rest is a claims object,
//! signed with the right secret, so the fuzzer reaches claim handling (user id, roles, name,
//! expiry) behind a valid signature.
//!
//! Checked: no panic; a token is only accepted when signed with the secret; an accepted identity
//! has a user id that passes `validate_name` and is marked verified.

#![no_main]

use std::collections::HashMap;

use herald::auth::Verifier;
use herald::config::AuthConfig;
use herald::protocol::validate_name;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-0123456789";

fn verifier() -> Verifier {
    let config = AuthConfig { jwt_secret: Some(SECRET.into()), ..AuthConfig::default() };
    match Verifier::new(&config) {
        Ok(Some(verifier)) => verifier,
        _ => panic!("an HS256 secret makes a verifier"),
    }
}

fn check_accepted(verifier: &Verifier, token: &str, signed_by_us: bool) {
    if let Ok(verified) = verifier.verify(token) {
        assert!(signed_by_us || token.split('.').count() == 3, "accepted a token that is not a JWT");
        assert!(verified.identity.verified);
        assert!(validate_name("user", &verified.identity.id).is_ok(), "unusable user id accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let verifier = verifier();
    if mode % 2 == 0 {
        let mut params = HashMap::new();
        params.insert("token".to_string(), text.to_string());
        let protocols: Vec<String> = text.split(',').map(|p| p.trim().to_string()).collect();
        let headers = http::HeaderMap::new();
        let from_query = herald::auth::presented(&headers, &params, &[]);
        assert_eq!(from_query.token.as_deref(), (!text.is_empty()).then_some(text));
        let from_protocols = herald::auth::presented(&headers, &HashMap::new(), &protocols);
        if let Some(token) = &from_protocols.token {
            check_accepted(&verifier, token, false);
        }
        check_accepted(&verifier, text, false);
    } else if let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        if let Ok(token) = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
            check_accepted(&verifier, &token, true);
        }
    }
});
