//! Keys the callee presses (Twilio's `dtmf` Media Stream events), joined into entries: digits
//! pressed within a short pause of each other are one entry, and `#` ends an entry at once. An
//! entry reaches the agent as `reply.create` instructions that name the keys, and the
//! transcript as a `[keypad]` line. Pure: the bridge owns the pause timer, which is armed only
//! when a key arrives, never on the audio path.

use std::time::Duration;

/// How long after a key the entry waits for another before it is complete.
pub const PAUSE: Duration = Duration::from_millis(1500);

/// Longest entry kept: more keys than any menu or code asks for.
const MAX_KEYS: usize = 32;

/// What a key press means for the entry under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// The entry is complete (`#` was pressed, or it is as long as an entry may be).
    Complete(String),
    /// More keys may follow: (re)arm the pause timer.
    Pending,
    /// Not a key a phone has; ignored.
    Ignored,
}

/// The entry under way.
#[derive(Debug, Default)]
pub(crate) struct Keypad {
    keys: String,
}

impl Keypad {
    /// One key as Twilio reports it (`"1"`, `"#"`, `"*"`, `"A"`…).
    pub(crate) fn press(&mut self, digit: &str) -> Key {
        let mut chars = digit.chars();
        let (Some(key), None) = (chars.next(), chars.next()) else {
            return Key::Ignored;
        };
        let key = key.to_ascii_uppercase();
        if !matches!(key, '0'..='9' | '*' | '#' | 'A'..='D') {
            return Key::Ignored;
        }
        if key == '#' {
            // `#` ends what was typed; pressed alone it is an entry of its own.
            if self.keys.is_empty() {
                return Key::Complete("#".into());
            }
            return Key::Complete(std::mem::take(&mut self.keys));
        }
        self.keys.push(key);
        if self.keys.len() >= MAX_KEYS {
            return Key::Complete(std::mem::take(&mut self.keys));
        }
        Key::Pending
    }

    /// The pause ran out: the entry so far, if any.
    pub(crate) fn pause_over(&mut self) -> Option<String> {
        (!self.keys.is_empty()).then(|| std::mem::take(&mut self.keys))
    }
}

/// What the agent is told about an entry. The keys are named one by one, so a model cannot
/// read `12` as twelve when the menu meant 1 then 2.
pub(crate) fn instructions(keys: &str) -> String {
    let named: Vec<String> = keys.chars().map(|c| c.to_string()).collect();
    format!(
        "The person pressed on their phone keypad: {}. Treat these keys as their answer to what you last asked (for example a menu choice) and reply to it.",
        named.join(" ")
    )
}

/// The transcript's words for an entry.
pub(crate) fn line(keys: &str) -> String {
    format!("[keypad] {keys}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_until_the_pause_or_hash() {
        let mut k = Keypad::default();
        assert_eq!(k.press("1"), Key::Pending);
        assert_eq!(k.press("2"), Key::Pending);
        assert_eq!(k.pause_over().as_deref(), Some("12"));
        assert_eq!(k.pause_over(), None);
        assert_eq!(k.press("4"), Key::Pending);
        assert_eq!(k.press("#"), Key::Complete("4".into()));
        assert_eq!(k.press("#"), Key::Complete("#".into()));
        assert_eq!(k.press("x"), Key::Ignored);
        assert_eq!(k.press("12"), Key::Ignored);
        assert_eq!(k.press(""), Key::Ignored);
        assert_eq!(k.press("*"), Key::Pending);
        assert_eq!(k.pause_over().as_deref(), Some("*"));
    }

    #[test]
    fn an_entry_is_bounded() {
        let mut k = Keypad::default();
        for _ in 0..MAX_KEYS - 1 {
            assert_eq!(k.press("9"), Key::Pending);
        }
        assert!(matches!(k.press("9"), Key::Complete(s) if s.len() == MAX_KEYS));
    }

    #[test]
    fn the_agent_is_told_each_key() {
        let text = instructions("12");
        assert!(text.contains("keypad: 1 2."), "{text}");
        assert_eq!(line("1"), "[keypad] 1");
    }
}
