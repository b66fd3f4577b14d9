//! Per-channel routing behaviour from the `[[channels]]` configuration.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ChannelConfig;

/// What a channel's configuration says about its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRule {
    /// The `type` given to events published without one.
    pub default_type: Option<String>,
    /// Deliver to every connection, subscribed or not.
    pub broadcast: bool,
    /// How its events are reshaped before the fan-out.
    pub shape: Option<Arc<super::shape::Shape>>,
}

/// Channel rules compiled for lookup: exact names first, then the longest matching prefix pattern.
#[derive(Debug, Clone, Default)]
pub struct ChannelRules {
    exact: HashMap<String, ChannelRule>,
    prefixes: Vec<(String, ChannelRule)>,
}

impl ChannelRules {
    /// Compiles the configured rules.
    pub fn new(configs: &[ChannelConfig]) -> Self {
        let mut rules = ChannelRules::default();
        for config in configs {
            let rule = ChannelRule {
                default_type: config.default_type.clone(),
                broadcast: config.broadcast,
                shape: config.shape.as_ref().map(|s| Arc::new(super::shape::Shape::new(s))),
            };
            match config.name.strip_suffix('*') {
                Some(prefix) => rules.prefixes.push((prefix.to_string(), rule)),
                None => {
                    rules.exact.insert(config.name.clone(), rule);
                }
            }
        }
        rules.prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        rules
    }

    /// The rule for `channel`, if any applies.
    pub fn get(&self, channel: &str) -> Option<&ChannelRule> {
        self.exact
            .get(channel)
            .or_else(|| self.prefixes.iter().find(|(prefix, _)| channel.starts_with(prefix.as_str())).map(|(_, r)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, kind: &str) -> ChannelConfig {
        ChannelConfig { name: name.into(), default_type: Some(kind.into()), ..Default::default() }
    }

    #[test]
    fn exact_beats_longest_prefix_beats_shorter() {
        let rules =
            ChannelRules::new(&[cfg("jobs:*", "a"), cfg("jobs:updates", "b"), cfg("jobs:x:*", "c"), cfg("*", "d")]);
        assert_eq!(rules.get("jobs:updates").unwrap().default_type.as_deref(), Some("b"));
        assert_eq!(rules.get("jobs:x:1").unwrap().default_type.as_deref(), Some("c"));
        assert_eq!(rules.get("jobs:other").unwrap().default_type.as_deref(), Some("a"));
        assert_eq!(rules.get("misc").unwrap().default_type.as_deref(), Some("d"));
    }
}
