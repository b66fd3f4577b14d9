//! Redis key names, in one place: every key and pub/sub channel Herald names is built here.
//!
//! Every name a client or publisher chooses (room, user, sheet, cell, address) that becomes part of
//! a Redis key goes through [`part`], which percent-encodes `%`, `:`, `{`, `}`, spaces and control
//! characters. Components are joined with `:`, which therefore never occurs inside one, so two
//! different tuples of names can never produce the same key: (`a:b`, `c`) and (`a`, `b:c`) were
//! once both `…:a:b:c`. Braces are encoded too, so a name can never pick a Redis Cluster hash tag.
//! Ordinary names (letters, digits, `_`, `-`, `.`) are left as they are.
//!
//! Keys with a single client-chosen component at the end (the broker's `c:<channel>` pub/sub
//! names, history's `h:{c:<channel>}`) cannot collide and keep their historical form, so that
//! positions and subscriptions survive an upgrade.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Bytes encoded inside a key component.
const RESERVED: &AsciiSet = &CONTROLS.add(b'%').add(b':').add(b'{').add(b'}').add(b' ');

/// One client-chosen key component, encoded so that it contains no separator.
pub fn part(name: &str) -> Cow<'_, str> {
    utf8_percent_encode(name, RESERVED).into()
}

/// `<prefix>:<kind>:<part>:<part>…`, every part encoded.
pub fn key(prefix: &str, kind: &str, parts: &[&str]) -> String {
    let mut key = format!("{prefix}:{kind}");
    for name in parts {
        key.push(':');
        key.push_str(&part(name));
    }
    key
}

/// `<prefix>:<kind>`: a key of the node or the cluster (`nodes`, the registry; `all`, the
/// broadcast channel).
pub fn fixed(prefix: &str, kind: &str) -> String {
    format!("{prefix}:{kind}")
}

/// `<prefix>:<kind>:<name>`, `name` as it is: keys whose one client-chosen component comes last,
/// so two names can never produce the same key (the broker's `c`/`r`/`u` channels, the node's
/// `ctl` channel, the Pusher face's `pc`/`pk`/`pp` keys). Their historical form is kept, so that
/// subscriptions, cached events and members survive an upgrade.
pub fn trailing(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}:{kind}:{name}")
}

/// The two keys of a stream with history, `<prefix>:h:{<stream>}` (its Redis Stream) and
/// `<prefix>:hm:{<stream>}` (epoch and last seq), under one hash tag so that a script may touch
/// both on a Redis Cluster. The stream name is kept as it is (see the module's note).
pub fn stream(prefix: &str, stream: &str) -> (String, String) {
    (format!("{prefix}:h:{{{stream}}}"), format!("{prefix}:hm:{{{stream}}}"))
}

/// `<prefix>:<kind>:{<kind>:<name>}`: on a Redis Cluster, the sharded pub/sub channel of a
/// channel (`c`) or room (`r`), under the hash tag of the stream of the same name (see
/// [`stream`]), so that the append script, which runs in the stream's slot, may publish on it.
/// The name is kept as it is, as in [`stream`], so that both always hash alike.
pub fn sharded(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}:{kind}:{{{kind}:{name}}}")
}

/// `<prefix>:<kind>:{<part>}`: a key whose hash tag is the encoded name, so that every key built
/// with the same name lands on the same Redis Cluster slot (a Lua script may touch them together).
pub fn tagged(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}:{kind}:{{{}}}", part(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_unchanged() {
        assert_eq!(key("herald", "pr:room", &["workspace_123"]), "herald:pr:room:workspace_123");
        assert_eq!(part("user-7.a_b"), "user-7.a_b");
    }

    #[test]
    fn separators_inside_names_cannot_collide() {
        assert_ne!(key("h", "cell", &["a:b", "c"]), key("h", "cell", &["a", "b:c"]));
        assert_ne!(key("h", "cell", &["a%3Ab", "c"]), key("h", "cell", &["a:b", "c"]));
        assert_eq!(key("h", "cell", &["a:b", "c"]), "h:cell:a%3Ab:c");
        assert_eq!(tagged("h", "cells", "x}{y"), "h:cells:{x%7D%7By}");
        assert_eq!(part("a b\n"), "a%20b%0A");
    }

    #[test]
    fn historical_forms_are_kept() {
        assert_eq!(fixed("herald", "nodes"), "herald:nodes");
        assert_eq!(trailing("herald", "pp", "\u{1f}p77\u{1f}presence-x"), "herald:pp:\u{1f}p77\u{1f}presence-x");
        assert_eq!(trailing("herald", "c", "a:b"), "herald:c:a:b");
        assert_eq!(stream("herald", "c:jobs:1"), ("herald:h:{c:jobs:1}".into(), "herald:hm:{c:jobs:1}".into()));
    }

    #[test]
    fn a_sharded_channel_shares_its_streams_slot() {
        use redis::cluster_routing::Slot;
        for (kind, name) in [("c", "jobs:1"), ("r", "order_7"), ("c", "a}b{c"), ("r", "")] {
            let channel = sharded("herald", kind, name);
            let (history, meta) = stream("herald", &format!("{kind}:{name}"));
            assert_eq!(Slot::for_key(&channel), Slot::for_key(&history), "{channel} / {history}");
            assert_eq!(Slot::for_key(&channel), Slot::for_key(&meta));
        }
        assert_eq!(sharded("herald", "c", "news"), "herald:c:{c:news}");
    }
}
