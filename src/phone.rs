//! Phone numbers: parsing what people type (or what a CSV holds) into E.164, the only form
//! Twilio accepts, with a clear reason when that is impossible; and the numbers that are
//! refused by default although valid (premium-rate, satellite, N11 service codes).

use std::fmt;

/// A phone number in E.164 form: `+`, a country code, the national number; 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct E164(String);

/// Why a string is not a callable phone number. The input it quotes is already made printable
/// (see [`printable`]), since it comes from files and command lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is empty")]
    Empty,
    #[error("'{0}' contains characters that are not part of a phone number")]
    BadCharacters(String),
    #[error("'{0}' has {1} {digits} with its country code; an international number has 8 to 15", digits = plural_digits(*.1))]
    BadLength(String, usize),
    #[error(
        "'{0}' has {1} {digits} after the country code 1; a North American number has 10 (area code and 7-digit number)",
        digits = plural_digits(*.1)
    )]
    NanpLength(String, usize),
    #[error("'{0}' has no country code after its + or 00 (country codes never start with 0)")]
    BadCountryCode(String),
    #[error(
        "'{0}' is a national number; write it as +<country code><number>, or set a default region"
    )]
    NeedsRegion(String),
    #[error(
        "'{0}' is not a valid North American number (area code and exchange cannot start with 0 or 1)"
    )]
    BadNanp(String),
    #[error("unknown default region '{0}' (use a two-letter code such as US, GB, DE)")]
    UnknownRegion(String),
}

fn plural_digits(n: usize) -> &'static str {
    if n == 1 { "digit" } else { "digits" }
}

/// Longest piece of outside input quoted in a message: enough to recognise it, never a screenful.
const QUOTE_CHARS: usize = 60;

/// Outside input as it may appear in a message: [`escape_controls`], cut after 60 characters so
/// a megabyte cell is not echoed whole. Phone numbers are the input most often quoted back, so
/// this lives here; the campaign's readers use it too.
pub fn printable(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => escape_controls(&text[..end]) + "…",
        None => escape_controls(text),
    }
}

/// Control characters (and the Unicode ones that reorder or hide text) escaped as `\u{1b}`,
/// so that text from a file cannot move the cursor, clear the screen or fake other output.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Country calling code and trunk prefix of the regions a default region may name.
const REGIONS: &[(&str, &str, &str)] = &[
    ("US", "1", ""),
    ("CA", "1", ""),
    ("PR", "1", ""),
    ("GB", "44", "0"),
    ("IE", "353", "0"),
    ("AU", "61", "0"),
    ("NZ", "64", "0"),
    ("DE", "49", "0"),
    ("FR", "33", "0"),
    ("ES", "34", ""),
    ("IT", "39", ""),
    ("PT", "351", ""),
    ("NL", "31", "0"),
    ("BE", "32", "0"),
    ("CH", "41", "0"),
    ("AT", "43", "0"),
    ("SE", "46", "0"),
    ("NO", "47", ""),
    ("DK", "45", ""),
    ("FI", "358", "0"),
    ("PL", "48", ""),
    ("MX", "52", ""),
    ("BR", "55", "0"),
    ("IN", "91", "0"),
    ("JP", "81", "0"),
    ("SG", "65", ""),
    ("ZA", "27", "0"),
];

impl E164 {
    /// Parse an international number (`+14155550100`, `+1 (415) 555-0100`, `00441234567890`).
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        Self::parse_with_region(input, None)
    }

    /// Parse, reading national formats (`(415) 555-0100`, `020 7183 8750`) in `region`.
    pub fn parse_with_region(input: &str, region: Option<&str>) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let shown = || printable(trimmed);
        let mut digits = String::with_capacity(trimmed.len().min(32));
        let mut plus = false;
        for (i, c) in trimmed.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
                _ => return Err(PhoneError::BadCharacters(shown())),
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::BadCharacters(shown()));
        }
        let international = if plus {
            digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest.to_string()
        } else {
            let Some(region) = region else {
                return Err(PhoneError::NeedsRegion(shown()));
            };
            let upper = region.trim().to_ascii_uppercase();
            let (_, cc, trunk) = REGIONS
                .iter()
                .find(|(r, _, _)| *r == upper)
                .ok_or_else(|| PhoneError::UnknownRegion(printable(region)))?;
            if *cc == "1" {
                // NANP: 10 digits, or 11 starting with the trunk digit 1.
                match digits.len() {
                    11 if digits.starts_with('1') => digits,
                    _ => format!("1{digits}"),
                }
            } else {
                let national = if !trunk.is_empty() {
                    digits.strip_prefix(trunk).unwrap_or(&digits)
                } else {
                    &digits
                };
                format!("{cc}{national}")
            }
        };
        if international.starts_with('0') {
            return Err(PhoneError::BadCountryCode(shown()));
        }
        if let Some(nanp) = international.strip_prefix('1') {
            let b = nanp.as_bytes();
            if b.len() != 10 {
                return Err(PhoneError::NanpLength(shown(), b.len()));
            }
            if b[0] < b'2' || b[3] < b'2' {
                return Err(PhoneError::BadNanp(shown()));
            }
        } else if !(8..=15).contains(&international.len()) {
            return Err(PhoneError::BadLength(shown(), international.len()));
        }
        Ok(E164(format!("+{international}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with its middle digits hidden, for logs: `+1415•••0100`.
    pub fn masked(&self) -> String {
        let s = &self.0;
        if s.len() <= 8 {
            return s.clone();
        }
        format!("{}•••{}", &s[..5], &s[s.len() - 4..])
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for E164 {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Prefixes of valid numbers that are refused unless allowed: a call to them is billed at a
/// premium to the caller's account, or reaches a satellite or network service rather than a
/// person. The text says what the number is.
const RESTRICTED_PREFIXES: &[(&str, &str)] = &[
    ("+1900", "a premium-rate number (+1 900)"),
    ("+1976", "a premium-rate number (+1 976)"),
    ("+449", "a UK premium-rate number (09)"),
    ("+870", "a satellite number (Inmarsat, +870)"),
    ("+881", "a satellite number (+881)"),
    ("+882", "an international network number (+882)"),
    ("+883", "an international network number (+883)"),
    ("+979", "an international premium-rate number (+979)"),
];

/// A valid number that is not dialed unless its prefix is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    pub number: E164,
    /// What the number is, e.g. "a premium-rate number (+1 900)".
    pub what: String,
    /// The shortest prefix that allows it, e.g. `+1900`.
    pub prefix: String,
}

impl fmt::Display for Restricted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}, not dialed by default", self.number, self.what)
    }
}

impl E164 {
    /// Why this number is refused by default, if it is: premium-rate and satellite prefixes,
    /// `976` exchanges (pay-per-call in most North American areas), and N11 codes (211, 311,
    /// 411 … 911: services such as directory and emergency) as an area code or an exchange,
    /// which no subscriber number has.
    pub fn restriction(&self) -> Option<Restricted> {
        let s = self.as_str();
        let restricted = |what: &str, prefix: &str| Restricted {
            number: self.clone(),
            what: what.to_string(),
            prefix: prefix.to_string(),
        };
        if let Some(&(prefix, what)) = RESTRICTED_PREFIXES.iter().find(|(p, _)| s.starts_with(p)) {
            return Some(restricted(what, prefix));
        }
        let nanp = s.strip_prefix("+1").filter(|n| n.len() == 10)?;
        let (area, exchange) = (&nanp[..3], &nanp[3..6]);
        let n11 = |code: &str| code.ends_with("11");
        if n11(area) {
            return Some(restricted(
                &format!("an N11 service code ({area}) used as an area code"),
                &s[..5],
            ));
        }
        if n11(exchange) {
            return Some(restricted(
                &format!("an N11 service code ({exchange}) used as an exchange"),
                &s[..8],
            ));
        }
        if exchange == "976" {
            return Some(restricted("a premium-rate number (976 exchange)", &s[..8]));
        }
        None
    }
}

/// Prefixes of numbers that may be dialed although [`E164::restriction`] refuses them by
/// default: a country (`+44`) or any longer prefix (`+1900`, `+1212976`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    prefixes: Vec<String>,
}

impl AllowList {
    /// Each item is `+` and 1 to 15 digits; spaces, dashes, dots and parentheses are ignored.
    /// The error names the item that is not a prefix.
    pub fn new<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut prefixes = Vec::with_capacity(items.len());
        for item in items {
            let item = item.as_ref();
            let compact: String = item
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
                .collect();
            let valid = compact.strip_prefix('+').is_some_and(|digits| {
                (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            });
            if !valid {
                return Err(format!(
                    "'{}' is not a number prefix: write + and the digits, like \"+1900\" or \"+44\"",
                    printable(item)
                ));
            }
            prefixes.push(compact);
        }
        Ok(Self { prefixes })
    }

    /// A comma-separated list, as an environment variable holds it (`+1900,+44`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Self::new(&items)
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    pub fn allows(&self, number: &E164) -> bool {
        self.prefixes.iter().any(|p| number.as_str().starts_with(p))
    }

    /// The number's restriction, unless a prefix here allows it.
    pub fn check(&self, number: &E164) -> Result<(), Restricted> {
        match number.restriction() {
            Some(r) if !self.allows(number) => Err(r),
            _ => Ok(()),
        }
    }
}

/// For `dialer call`: whether `number` may be dialed, or one line saying why not and how to
/// allow it. The command is expected to build `allow` from an `--allow-prefix` flag (repeatable)
/// and an `ALLOW_PREFIXES` setting (comma-separated, [`AllowList::parse`]); the message names
/// both.
pub fn check_call(number: &E164, allow: &AllowList) -> Result<(), String> {
    allow.check(number).map_err(|r| {
        format!(
            "{r}; to call it, pass --allow-prefix {} (or set ALLOW_PREFIXES={})",
            r.prefix, r.prefix
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_forms() {
        assert_eq!(
            E164::parse("+14155550100").unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse("+1 (415) 555-0100").unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse("0044 20 7183 8750").unwrap().as_str(),
            "+442071838750"
        );
    }

    #[test]
    fn national_forms_need_a_region() {
        assert_eq!(
            E164::parse("(415) 555-0100"),
            Err(PhoneError::NeedsRegion("(415) 555-0100".into()))
        );
        assert_eq!(
            E164::parse_with_region("(415) 555-0100", Some("us"))
                .unwrap()
                .as_str(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse_with_region("1-415-555-0100", Some("US"))
                .unwrap()
                .as_str(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse_with_region("020 7183 8750", Some("GB"))
                .unwrap()
                .as_str(),
            "+442071838750"
        );
        assert!(matches!(
            E164::parse_with_region("020 7183 8750", Some("XX")),
            Err(PhoneError::UnknownRegion(_))
        ));
    }

    #[test]
    fn invalid_numbers() {
        assert_eq!(E164::parse(""), Err(PhoneError::Empty));
        assert!(matches!(
            E164::parse("+1555abc"),
            Err(PhoneError::BadCharacters(_))
        ));
        assert_eq!(
            E164::parse("+1234"),
            Err(PhoneError::NanpLength("+1234".into(), 3))
        );
        assert_eq!(
            E164::parse("+1415555010"),
            Err(PhoneError::NanpLength("+1415555010".into(), 9))
        );
        assert!(matches!(
            E164::parse("+10155550100"),
            Err(PhoneError::BadNanp(_))
        ));
        assert!(matches!(
            E164::parse("+14151550100"),
            Err(PhoneError::BadNanp(_))
        ));
        assert_eq!(
            E164::parse("+4412345678901234"),
            Err(PhoneError::BadLength("+4412345678901234".into(), 16))
        );
        assert_eq!(
            E164::parse("+4412"),
            Err(PhoneError::BadLength("+4412".into(), 4))
        );
        assert_eq!(
            E164::parse("+0441234567890"),
            Err(PhoneError::BadCountryCode("+0441234567890".into()))
        );
    }

    /// Each message says one thing about the number and the rule, and the two agree.
    #[test]
    fn length_messages_do_not_contradict_themselves() {
        let message = |input: &str, region| {
            E164::parse_with_region(input, region)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message("+1234567", None),
            "'+1234567' has 6 digits after the country code 1; a North American number has 10 (area code and 7-digit number)"
        );
        // Once read as "has 8 digits; E.164 has 8 to 15".
        assert_eq!(
            message("555-0100", Some("US")),
            "'555-0100' has 7 digits after the country code 1; a North American number has 10 (area code and 7-digit number)"
        );
        assert_eq!(
            message("+12", None),
            "'+12' has 1 digit after the country code 1; a North American number has 10 (area code and 7-digit number)"
        );
        assert_eq!(
            message("+4420", None),
            "'+4420' has 4 digits with its country code; an international number has 8 to 15"
        );
        assert_eq!(
            message("00012345678", None),
            "'00012345678' has no country code after its + or 00 (country codes never start with 0)"
        );
        // Every length error's count lies outside the range it states.
        for len in 1..=20 {
            for prefix in ["+1", "+44", "+7"] {
                let input = format!("{prefix}{}", "2".repeat(len));
                match E164::parse(&input) {
                    Err(PhoneError::BadLength(_, n)) => assert!(!(8..=15).contains(&n), "{input}"),
                    Err(PhoneError::NanpLength(_, n)) => assert_ne!(n, 10, "{input}"),
                    Ok(_) => {}
                    Err(e) => panic!("{input}: {e}"),
                }
            }
        }
    }

    #[test]
    fn messages_never_echo_control_characters_nor_a_whole_megabyte() {
        for input in [
            "+1\u{1b}[2J202",
            "\u{7}+12025550100",
            "+1202\r\n5550100",
            "+1202\u{202e}5550100",
            "\u{0}\u{0}",
        ] {
            let message = E164::parse(input).unwrap_err().to_string();
            assert!(
                !message.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{message:?}"
            );
        }
        let huge = "x".repeat(1 << 20);
        let message = E164::parse(&huge).unwrap_err().to_string();
        assert!(message.len() < 200, "{}", message.len());
        assert_eq!(printable("a\tb\u{1b}c"), "a\\tb\\u{1b}c");
        assert_eq!(printable("café ☎"), "café ☎");
    }

    #[test]
    fn premium_satellite_and_n11_numbers_are_refused_by_default() {
        let refused = |s: &str| E164::parse(s).unwrap().restriction().map(|r| r.prefix);
        for (number, prefix) in [
            ("+19005550100", "+1900"),
            ("+19765550100", "+1976"),
            ("+2129765555", "+1212976"),
            ("+449098790000", "+449"),
            ("+8816555010", "+881"),
            ("+882345678901", "+882"),
            ("+870772123456", "+870"),
            ("+19115550100", "+1911"),
            ("+12115550100", "+1211"),
            ("+13115550100", "+1311"),
            ("+14115550100", "+1411"),
            ("+15115550100", "+1511"),
            ("+16115550100", "+1611"),
            ("+17115550100", "+1711"),
            ("+18115550100", "+1811"),
            ("+12024115555", "+1202411"),
            ("+12029115555", "+1202911"),
        ] {
            let number = number.replace("+2129765555", "+12129765555");
            assert_eq!(refused(&number).as_deref(), Some(prefix), "{number}");
        }
        for fine in [
            "+12025550100",
            "+12025550111",
            "+14155551911",
            "+442071838750",
            "+8005550100",
            "+15005550001",
        ] {
            assert_eq!(refused(fine), None, "{fine}");
        }
        let r = E164::parse("+19005550100").unwrap().restriction().unwrap();
        assert_eq!(
            r.to_string(),
            "+19005550100 is a premium-rate number (+1 900), not dialed by default"
        );
    }

    #[test]
    fn a_prefix_or_a_country_allows_a_refused_number() {
        let premium = E164::parse("+19005550100").unwrap();
        let uk = E164::parse("+449098790000").unwrap();
        let none = AllowList::default();
        assert!(none.check(&premium).is_err());
        let allow = AllowList::new(&["+1 900", "+44"]).unwrap();
        assert_eq!(allow.prefixes(), ["+1900", "+44"]);
        assert!(allow.check(&premium).is_ok() && allow.check(&uk).is_ok());
        assert!(allow.check(&E164::parse("+19115550100").unwrap()).is_err());
        assert_eq!(AllowList::parse(" +1900, ,+44 ").unwrap(), allow);
        for bad in ["1900", "+", "+19a", "+1234567890123456", ""] {
            let e = AllowList::new(&[bad]).unwrap_err();
            assert!(e.contains("is not a number prefix"), "{e}");
        }
        let e = check_call(&premium, &none).unwrap_err();
        assert_eq!(
            e,
            "+19005550100 is a premium-rate number (+1 900), not dialed by default; to call it, pass --allow-prefix +1900 (or set ALLOW_PREFIXES=+1900)"
        );
        assert!(check_call(&premium, &allow).is_ok());
        assert!(check_call(&E164::parse("+12025550100").unwrap(), &none).is_ok());
    }

    /// Whatever the input, parsing ends in a number or a one-line printable message.
    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        const PIECES: [&str; 16] = [
            "+",
            "00",
            "1",
            "0",
            "9",
            "(",
            ")",
            "-",
            " ",
            "\u{0}",
            "\r",
            "é",
            "\u{202e}",
            "911",
            "2025550100",
            "\u{ffff}",
        ];
        for _ in 0..20_000 {
            let len = rng.random_range(0..12);
            let input: String = (0..len)
                .map(|_| {
                    if rng.random_bool(0.3) {
                        char::from_u32(rng.random_range(0..0x11_0000))
                            .unwrap_or('?')
                            .to_string()
                    } else {
                        PIECES[rng.random_range(0..PIECES.len())].to_string()
                    }
                })
                .collect();
            let region = ["US", "GB", "xx", ""][rng.random_range(0..4)];
            for region in [None, Some(region)] {
                match E164::parse_with_region(&input, region) {
                    Ok(number) => {
                        assert!(number.as_str().starts_with('+'));
                        let _ = number.restriction();
                        let _ = number.masked();
                    }
                    Err(e) => {
                        let message = e.to_string();
                        assert!(!message.is_empty());
                        assert!(!message.chars().any(char::is_control), "{message:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn masking_hides_the_middle() {
        assert_eq!(
            E164::parse("+14155550100").unwrap().masked(),
            "+1415•••0100"
        );
    }
}
