//! Which `To`/`From` values the fake takes as phone numbers, judged from Twilio's documented
//! rules rather than by our client's parser: a fake that shared the client's parser could never
//! catch a bug in it. Which error code a refusal earns is decided by the REST layer.

/// Punctuation people put inside numbers. Twilio's support pages say numbers that are not in
/// strict E.164 "may work"; the fake has always read `+1 202 555 0107` as `+12025550107`, and
/// keeps doing so.
const SEPARATORS: &[char] = &[' ', '-', '.', '(', ')'];

/// The number in E.164 (`+` and digits only), or `None` when Twilio would answer "not a valid
/// phone number".
///
/// The rules, from Twilio's E.164 glossary and its page on error 21211:
/// - a leading `+`, then digits only: no national forms, no `00`/`011` international prefix;
/// - the first digit (the country code's) is not 0, and there are at most 15 digits and at
///   least 2 (the glossary's `^\+[1-9]\d{1,14}$`);
/// - country code 1 (the North American plan): exactly 10 digits follow, and neither the area
///   code nor the exchange starts with 0 or 1, so the number cannot exist.
pub(super) fn e164(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !SEPARATORS.contains(c)).collect();
    let digits = compact.strip_prefix('+')?;
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !(2..=15).contains(&digits.len())
        || digits.starts_with('0')
    {
        return None;
    }
    if let Some(national) = digits.strip_prefix('1') {
        let b = national.as_bytes();
        let starts_ok = |d: u8| d >= b'2';
        if b.len() != 10 || !starts_ok(b[0]) || !starts_ok(b[3]) {
            return None;
        }
    }
    Some(compact)
}

#[cfg(test)]
mod tests {
    use super::e164;

    #[test]
    fn strict_e164_is_taken_as_is() {
        for n in [
            "+12025550100",
            "+15005550006",
            "+442071838750",
            "+551155256325",
        ] {
            assert_eq!(e164(n).as_deref(), Some(n));
        }
        // Fifteen digits is the most E.164 allows.
        assert_eq!(
            e164("+447911123456789").as_deref(),
            Some("+447911123456789")
        );
    }

    #[test]
    fn separators_are_dropped() {
        assert_eq!(e164("+1 202 555 0107").as_deref(), Some("+12025550107"));
        assert_eq!(e164("+1 (415) 555-0100").as_deref(), Some("+14155550100"));
        assert_eq!(e164("+44.20.7183.8750").as_deref(), Some("+442071838750"));
    }

    #[test]
    fn what_twilio_refuses() {
        for bad in [
            "",
            "+",
            "12025550100",       // no `+`: a national or unprefixed form
            "0044 20 7183 8750", // an international prefix instead of `+`
            "+0441234567",       // no country code starts with 0
            "+4",                // a country code alone
            "+4479111234567890", // sixteen digits
            "+1202555010a",
            "+1 202 555 0107 ext 2",
            "++12025550100",
            "+1415555010",   // NANP: nine digits after the 1
            "+141555501000", // NANP: eleven
            "+1 (415) 555-01",
            "+10155550100", // NANP area code starting with 0
            "+14151550100", // NANP exchange starting with 1
            "sip:alice@example.com",
            "client:alice",
        ] {
            assert_eq!(e164(bad), None, "{bad:?}");
        }
    }
}
