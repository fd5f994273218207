//! Phone numbers: parsing what people type (or what a CSV holds) into E.164, the only form
//! Twilio accepts, with a clear reason when that is impossible.

use std::fmt;

/// A phone number in E.164 form: `+`, a country code, the national number; 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct E164(String);

/// Why a string is not a callable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is empty")]
    Empty,
    #[error("'{0}' contains characters that are not part of a phone number")]
    BadCharacters(String),
    #[error("'{0}' has {1} digits; an E.164 number has 8 to 15 including the country code")]
    BadLength(String, usize),
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
        let mut digits = String::with_capacity(trimmed.len());
        let mut plus = false;
        for (i, c) in trimmed.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
                _ => return Err(PhoneError::BadCharacters(trimmed.to_string())),
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::BadCharacters(trimmed.to_string()));
        }
        let international = if plus {
            digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest.to_string()
        } else {
            let Some(region) = region else {
                return Err(PhoneError::NeedsRegion(trimmed.to_string()));
            };
            let upper = region.trim().to_ascii_uppercase();
            let (_, cc, trunk) = REGIONS
                .iter()
                .find(|(r, _, _)| *r == upper)
                .ok_or_else(|| PhoneError::UnknownRegion(region.to_string()))?;
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
        if !(8..=15).contains(&international.len()) || international.starts_with('0') {
            return Err(PhoneError::BadLength(
                trimmed.to_string(),
                international.len(),
            ));
        }
        if let Some(nanp) = international.strip_prefix('1') {
            let b = nanp.as_bytes();
            if b.len() != 10 {
                return Err(PhoneError::BadLength(
                    trimmed.to_string(),
                    international.len(),
                ));
            }
            if b[0] < b'2' || b[3] < b'2' {
                return Err(PhoneError::BadNanp(trimmed.to_string()));
            }
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
        assert!(matches!(
            E164::parse("+1234"),
            Err(PhoneError::BadLength(..))
        ));
        assert!(matches!(
            E164::parse("+1415555010"),
            Err(PhoneError::BadLength(..))
        ));
        assert!(matches!(
            E164::parse("+10155550100"),
            Err(PhoneError::BadNanp(_))
        ));
        assert!(matches!(
            E164::parse("+14151550100"),
            Err(PhoneError::BadNanp(_))
        ));
        assert!(matches!(
            E164::parse("+1234567890123456"),
            Err(PhoneError::BadLength(..))
        ));
    }

    #[test]
    fn masking_hides_the_middle() {
        assert_eq!(
            E164::parse("+14155550100").unwrap().masked(),
            "+1415•••0100"
        );
    }
}
