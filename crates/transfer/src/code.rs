//! Transfer codes: `NUMBER-word-word-word`, as magic-wormhole and croc print them.
//!
//! The number names the room (`send-NUMBER`) the two sides meet in and is all the server
//! learns; the words (24 bits from a list of 256) only feed the PAKE, so guessing them means
//! taking part in a pairing: one guess per attempt, and the sender gives up after one.

use std::fmt;

/// 256 short, distinct, easy-to-say words: one byte each.
pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adobe", "agent", "album", "alpha", "amber", "angle", "apple",
    "apron", "arena", "armor", "arrow", "aspen", "atlas", "attic", "award", "bacon", "badge",
    "bagel", "baker", "bamboo", "banjo", "barn", "basil", "batch", "beach", "beard", "bench",
    "berry", "bison", "blade", "blank", "blaze", "bloom", "board", "boat", "bonus", "boot",
    "brave", "bread", "brick", "bridge", "brook", "brush", "bucket", "bugle", "cabin", "cable",
    "cactus", "camel", "candle", "canoe", "canyon", "cargo", "carpet", "castle", "cedar", "chalk",
    "cherry", "chess", "chief", "cider", "cinema", "circle", "citrus", "clay", "cliff", "clock",
    "cloud", "clover", "coast", "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "cradle",
    "crane", "crater", "crayon", "cream", "cricket", "crown", "cube", "cycle", "daisy", "dance",
    "delta", "denim", "desert", "diary", "dingo", "dolphin", "donut", "dragon", "drum", "dune",
    "eagle", "easel", "echo", "eclipse", "elbow", "elder", "ember", "engine", "falcon", "fable",
    "feather", "fence", "fern", "ferry", "fiddle", "field", "flame", "flask", "flint", "flute",
    "forest", "fossil", "fox", "frost", "fudge", "galaxy", "garden", "garlic", "gecko", "geyser",
    "ginger", "glacier", "globe", "goose", "granite", "grape", "gravel", "guitar", "hammer",
    "harbor", "hazel", "helmet", "heron", "hiker", "honey", "hornet", "husky", "igloo", "index",
    "island", "ivory", "jacket", "jaguar", "jasmine", "jelly", "jigsaw", "juice", "jungle",
    "kayak", "kettle", "kiwi", "koala", "ladder", "lagoon", "lantern", "laser", "lemon", "lilac",
    "linen", "lizard", "lobster", "locket", "lotus", "magnet", "mango", "maple", "marble",
    "meadow", "melon", "meteor", "mint", "mirror", "mitten", "monkey", "mosaic", "muffin",
    "nectar", "needle", "nickel", "noodle", "oasis", "ocean", "olive", "onion", "opal", "orbit",
    "orchid", "otter", "oyster", "paddle", "panda", "papaya", "parrot", "peach", "pebble",
    "pepper", "piano", "pickle", "pilot", "pixel", "planet", "plaza", "pocket", "polar", "poppy",
    "prism", "puzzle", "quartz", "quill", "rabbit", "radar", "raven", "reef", "ribbon", "river",
    "robin", "rocket", "saddle", "salmon", "sandal", "satin", "scarf", "shadow", "silver",
    "sketch", "sparrow", "spice", "spiral", "sponge", "spruce", "squid", "statue", "summit",
    "sunset", "tango", "teapot", "thunder", "tiger", "timber", "toast", "topaz", "tulip", "tundra",
    "turtle", "velvet", "violin",
];

/// How many words a new code has.
pub const WORD_COUNT: usize = 3;
/// Room numbers are drawn from `1..=MAX_NUMBER`.
pub const MAX_NUMBER: u16 = 999;

/// A transfer code.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    /// The room number.
    pub number: u16,
    /// The secret words (lower case).
    pub words: Vec<String>,
}

/// Why a code does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    /// No number in front.
    #[error("a code starts with a number (like 7-amber-crane-otter)")]
    Number,
    /// Too few words.
    #[error("a code has a number and two or three words (like 7-amber-crane-otter)")]
    Words,
    /// A word that is not in the list.
    #[error("{0:?} is not a code word (typo?)")]
    UnknownWord(String),
}

impl Code {
    /// A fresh random code with `number`.
    pub fn random(number: u16) -> Code {
        let mut b = [0u8; WORD_COUNT];
        let _ = getrandom::fill(&mut b);
        Code {
            number,
            words: b.iter().map(|&i| WORDS[i as usize].to_string()).collect(),
        }
    }

    /// A random room number.
    pub fn random_number() -> u16 {
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        1 + u16::from_le_bytes(b) % MAX_NUMBER
    }

    /// Parses `7-amber-crane-otter` (also spaces, any case).
    pub fn parse(s: &str) -> Result<Code, CodeError> {
        let mut parts = s
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let number: u16 = parts
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_NUMBER).contains(n))
            .ok_or(CodeError::Number)?;
        let mut words = Vec::new();
        for w in parts {
            let w = w.to_ascii_lowercase();
            if !WORDS.contains(&w.as_str()) {
                return Err(CodeError::UnknownWord(w));
            }
            words.push(w);
        }
        if !(2..=4).contains(&words.len()) {
            return Err(CodeError::Words);
        }
        Ok(Code { number, words })
    }

    /// The signaling room the two sides meet in.
    pub fn room(&self) -> String {
        format!("send-{}", self.number)
    }

    /// The PAKE password: the whole code, normalized.
    pub fn password(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number)?;
        for w in &self.words {
            write!(f, "-{w}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never log the secret words.
        write!(f, "Code({}-…)", self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_plain() {
        let mut w = WORDS.to_vec();
        w.sort_unstable();
        w.dedup();
        assert_eq!(w.len(), 256);
        assert!(WORDS
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    /// The `/send` page generates and checks codes itself: its list (`web/spake2.js`) must be
    /// this one, in the same order (a word is a byte).
    #[test]
    fn the_browser_page_has_the_same_words() {
        let js = include_str!("../../../web/spake2.js");
        let list = js
            .split_once("export const WORDS = Object.freeze([")
            .and_then(|(_, rest)| rest.split_once("]);"))
            .map(|(list, _)| list)
            .expect("WORDS in web/spake2.js");
        let words: Vec<&str> = list
            .split(',')
            .map(|w| w.trim().trim_matches('"'))
            .filter(|w| !w.is_empty())
            .collect();
        assert_eq!(words, WORDS.to_vec());
    }

    #[test]
    fn round_trip_and_normalize() {
        for _ in 0..100 {
            let c = Code::random(Code::random_number());
            assert_eq!(Code::parse(&c.to_string()).unwrap(), c);
        }
        let c = Code::parse(" 42 Amber  crane-OTTER ").unwrap();
        assert_eq!(c.to_string(), "42-amber-crane-otter");
        assert_eq!(c.room(), "send-42");
        assert_eq!(Code::parse("amber-crane"), Err(CodeError::Number));
        assert_eq!(Code::parse("0-amber-crane"), Err(CodeError::Number));
        assert_eq!(Code::parse("5-amber"), Err(CodeError::Words));
        assert!(matches!(
            Code::parse("5-amber-zzz"),
            Err(CodeError::UnknownWord(_))
        ));
    }
}
