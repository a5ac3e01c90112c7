//! Channel names, namespaces and the channel patterns of token claims.
//!
//! A channel name is 1..=`limits.max_channel_length` bytes of `[A-Za-z0-9_\-.:@/=+#$!~;,|]`.
//! The part before the first `:` names its namespace (`chat:room1` → `chat`); a name without
//! `:` belongs to the default namespace. Neither the namespace nor the rest may be empty.
//! `*` is never part of a name: it is the wildcard of [`ChannelPattern`].

use crate::error::HubError;

/// Whether `b` may appear in a channel name (the alphabet shared with signaling rooms).
pub fn is_channel_byte(b: u8) -> bool {
    switchboard_signal::rooms::is_name_byte(b)
}

/// Checks a channel name (107 bad request on failure).
pub fn validate_channel(name: &str, max_len: usize) -> Result<(), HubError> {
    if name.is_empty() {
        return Err(HubError::BadRequest("empty channel name"));
    }
    if name.len() > max_len {
        return Err(HubError::BadRequest("channel name too long"));
    }
    if !name.bytes().all(is_channel_byte) {
        return Err(HubError::BadRequest("invalid character in channel name"));
    }
    if let Some((ns, rest)) = name.split_once(':') {
        if ns.is_empty() || rest.is_empty() {
            return Err(HubError::BadRequest("empty namespace or channel after ':'"));
        }
    }
    Ok(())
}

/// The namespace of a (valid) channel name, `None` for the default namespace.
pub fn namespace_of(channel: &str) -> Option<&str> {
    channel.split_once(':').map(|(ns, _)| ns)
}

/// An entry of a token's `channels` claim: an exact channel name, or a prefix followed by `*`
/// (`chat:*` matches every channel of namespace `chat`; `*` matches everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    text: String,
    prefix: bool,
}

impl ChannelPattern {
    /// Parses a pattern; `None` when it is neither a channel name nor `prefix*` (a `*` anywhere
    /// else, or characters outside the channel charset).
    pub fn parse(text: &str, max_len: usize) -> Option<Self> {
        if let Some(prefix) = text.strip_suffix('*') {
            if prefix.len() > max_len || !prefix.bytes().all(is_channel_byte) {
                return None;
            }
            return Some(Self {
                text: prefix.to_owned(),
                prefix: true,
            });
        }
        validate_channel(text, max_len).ok()?;
        Some(Self {
            text: text.to_owned(),
            prefix: false,
        })
    }

    /// Whether `channel` matches.
    pub fn matches(&self, channel: &str) -> bool {
        if self.prefix {
            channel.starts_with(&self.text)
        } else {
            channel == self.text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert!(validate_channel("news", 255).is_ok());
        assert!(validate_channel("chat:room:1", 255).is_ok());
        assert_eq!(namespace_of("chat:room:1"), Some("chat"));
        assert_eq!(namespace_of("news"), None);
        for bad in ["", ":x", "x:", "a b", "a*", "é", "a\"b", "a\\b"] {
            assert_eq!(
                validate_channel(bad, 255).map_err(|e| e.code()),
                Err(107),
                "{bad:?}"
            );
        }
        assert!(validate_channel(&"a".repeat(256), 255).is_err());
        assert!(validate_channel(&"a".repeat(255), 255).is_ok());
    }

    #[test]
    fn patterns() {
        let p = ChannelPattern::parse("chat:*", 255).unwrap();
        assert!(p.matches("chat:a") && !p.matches("chatter") && !p.matches("news"));
        let all = ChannelPattern::parse("*", 255).unwrap();
        assert!(all.matches("anything"));
        let exact = ChannelPattern::parse("news", 255).unwrap();
        assert!(exact.matches("news") && !exact.matches("news2"));
        assert!(ChannelPattern::parse("a*b", 255).is_none());
        assert!(ChannelPattern::parse("a b*", 255).is_none());
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_agrees_with_charset(s in "\\PC{0,40}") {
            let ok = validate_channel(&s, 32).is_ok();
            let expected = !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(is_channel_byte)
                && s.split_once(':').is_none_or(|(a, b)| !a.is_empty() && !b.is_empty());
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn valid_names_match_their_own_pattern(s in "[a-z0-9_]{1,10}(:[a-z0-9_.]{1,10})?") {
            prop_assert!(validate_channel(&s, 255).is_ok());
            let exact = ChannelPattern::parse(&s, 255).unwrap();
            prop_assert!(exact.matches(&s));
            let ns = namespace_of(&s).unwrap_or("");
            let wildcard = ChannelPattern::parse(&format!("{ns}*"), 255).unwrap();
            prop_assert!(wildcard.matches(&s));
        }
    }
}
