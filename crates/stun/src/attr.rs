//! Attribute type numbers, grouped by the RFC that defines them, with [`name`] and [`is_known`].
//!
//! Types below 0x8000 are comprehension-required, types from 0x8000 comprehension-optional
//! (RFC 8489 §14).

macro_rules! attributes {
    ($( $(#[$group:meta])* group { $( $(#[$doc:meta])* $name:ident = $val:expr, $text:literal; )* } )*) => {
        $( $( $(#[$doc])* pub const $name: u16 = $val; )* )*

        /// The registered name of an attribute type this crate knows, e.g. `"XOR-MAPPED-ADDRESS"`.
        pub const fn name(typ: u16) -> Option<&'static str> {
            match typ {
                $( $( $val => Some($text), )* )*
                _ => None,
            }
        }

        /// Whether this crate knows the attribute type (every constant of this module).
        pub const fn is_known(typ: u16) -> bool {
            name(typ).is_some()
        }

        /// Every attribute type this crate knows.
        pub const ALL: &[u16] = &[ $( $( $val, )* )* ];
    };
}

attributes! {
    /// RFC 8489 (STUN).
    group {
        /// MAPPED-ADDRESS (RFC 8489 §14.1).
        MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
        /// USERNAME (RFC 8489 §14.3).
        USERNAME = 0x0006, "USERNAME";
        /// MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes (RFC 8489 §14.5).
        MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
        /// ERROR-CODE (RFC 8489 §14.8).
        ERROR_CODE = 0x0009, "ERROR-CODE";
        /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
        UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
        /// REALM (RFC 8489 §14.9).
        REALM = 0x0014, "REALM";
        /// NONCE (RFC 8489 §14.10).
        NONCE = 0x0015, "NONCE";
        /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, 16..=32 bytes (RFC 8489 §14.6).
        MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
        /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
        PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
        /// USERHASH (RFC 8489 §14.4).
        USERHASH = 0x001E, "USERHASH";
        /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
        XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
        /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
        PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
        /// ALTERNATE-DOMAIN (RFC 8489 §14.16).
        ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
        /// SOFTWARE (RFC 8489 §14.14).
        SOFTWARE = 0x8022, "SOFTWARE";
        /// ALTERNATE-SERVER (RFC 8489 §14.15).
        ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
        /// FINGERPRINT (RFC 8489 §14.7).
        FINGERPRINT = 0x8028, "FINGERPRINT";
    }
    /// RFC 8656 (TURN).
    group {
        /// CHANNEL-NUMBER (RFC 8656 §18.1).
        CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
        /// LIFETIME (RFC 8656 §18.2).
        LIFETIME = 0x000D, "LIFETIME";
        /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
        XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
        /// DATA (RFC 8656 §18.4).
        DATA = 0x0013, "DATA";
        /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
        XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
        /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
        REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
        /// EVEN-PORT (RFC 8656 §18.7).
        EVEN_PORT = 0x0018, "EVEN-PORT";
        /// REQUESTED-TRANSPORT (RFC 8656 §18.8).
        REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
        /// DONT-FRAGMENT (RFC 8656 §18.9).
        DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
        /// RESERVATION-TOKEN (RFC 8656 §18.10).
        RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
        /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
        ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
        /// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
        ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
        /// ICMP (RFC 8656 §18.13).
        ICMP = 0x8004, "ICMP";
    }
    /// RFC 6062 (TURN extensions for TCP allocations).
    group {
        /// CONNECTION-ID (RFC 6062 §6.2.1).
        CONNECTION_ID = 0x002A, "CONNECTION-ID";
    }
    /// RFC 5780 (NAT behaviour discovery).
    group {
        /// CHANGE-REQUEST (RFC 5780 §7.2; also RFC 3489).
        CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST";
        /// PADDING (RFC 5780 §7.6).
        PADDING = 0x0026, "PADDING";
        /// RESPONSE-PORT (RFC 5780 §7.5).
        RESPONSE_PORT = 0x0027, "RESPONSE-PORT";
        /// RESPONSE-ORIGIN (RFC 5780 §7.3).
        RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN";
        /// OTHER-ADDRESS (RFC 5780 §7.4).
        OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS";
    }
    /// RFC 3489 (classic STUN; deprecated by RFC 5389 but still seen).
    group {
        /// RESPONSE-ADDRESS (RFC 3489 §11.2.2).
        RESPONSE_ADDRESS = 0x0002, "RESPONSE-ADDRESS";
        /// SOURCE-ADDRESS (RFC 3489 §11.2.5).
        SOURCE_ADDRESS = 0x0004, "SOURCE-ADDRESS";
        /// CHANGED-ADDRESS (RFC 3489 §11.2.3).
        CHANGED_ADDRESS = 0x0005, "CHANGED-ADDRESS";
        /// REFLECTED-FROM (RFC 3489 §11.2.11).
        REFLECTED_FROM = 0x000B, "REFLECTED-FROM";
    }
    /// RFC 8445 (ICE).
    group {
        /// PRIORITY (RFC 8445 §16.1).
        PRIORITY = 0x0024, "PRIORITY";
        /// USE-CANDIDATE (RFC 8445 §16.1).
        USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
        /// ICE-CONTROLLED (RFC 8445 §16.1).
        ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
        /// ICE-CONTROLLING (RFC 8445 §16.1).
        ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
    }
}

/// Whether an attribute type is comprehension-required (below 0x8000, RFC 8489 §14).
pub const fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_known() {
        assert_eq!(name(XOR_MAPPED_ADDRESS), Some("XOR-MAPPED-ADDRESS"));
        assert_eq!(name(FINGERPRINT), Some("FINGERPRINT"));
        assert_eq!(name(CONNECTION_ID), Some("CONNECTION-ID"));
        assert_eq!(name(0x7777), None);
        assert!(is_known(ICE_CONTROLLING));
        assert!(!is_known(0x0007));
        assert_eq!(ALL.len(), 43);
        for (i, a) in ALL.iter().enumerate() {
            assert!(is_known(*a));
            assert!(!ALL[i + 1..].contains(a), "duplicate {a:#06x}");
        }
        assert!(is_comprehension_required(USERNAME));
        assert!(!is_comprehension_required(SOFTWARE));
    }
}
