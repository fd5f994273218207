//! TwiML for our calls: connect the callee to a bidirectional Media Stream, and if the stream
//! ends without the call ending (the agent failed), apologise and hang up rather than leave the
//! callee in silence.

/// What the callee hears when the agent cannot continue.
pub(crate) const FALLBACK_APOLOGY: &str =
    "We're sorry, our assistant is unavailable right now. We will try again later. Goodbye.";

/// `<Response><Connect><Stream url=…><Parameter …/></Stream></Connect><Say>…</Say><Hangup/></Response>`.
/// `stream_url` must be `wss://` for real Twilio and carry no query string; per-call data
/// travels as `<Parameter>`s (each name+value under 500 characters).
pub(crate) fn connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url=""#);
    out.push_str(&escape(stream_url));
    out.push_str(r#"">"#);
    for (name, value) in parameters {
        out.push_str(r#"<Parameter name=""#);
        out.push_str(&escape(name));
        out.push_str(r#"" value=""#);
        out.push_str(&escape(value));
        out.push_str(r#""/>"#);
    }
    out.push_str("</Stream></Connect><Say>");
    out.push_str(&escape(FALLBACK_APOLOGY));
    out.push_str("</Say><Hangup/></Response>");
    out
}

/// What a live call is switched to when its agent cannot go on: the apology, then a hang-up.
pub(crate) fn apology() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
        escape(FALLBACK_APOLOGY)
    )
}

/// Say `words`, then hang up: the answer to a call the server cannot take.
pub(crate) fn say_and_hang_up(words: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
        escape(words)
    )
}

/// A document that changes nothing (Twilio asked again for TwiML it is already running).
pub(crate) fn empty() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#.to_string()
}

/// XML-escape text for attribute values and element content.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_document() {
        let doc = connect_stream("wss://example.com/twilio/media", &[("token", "abc")]);
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"wss://example.com/twilio/media\"><Parameter name=\"token\" value=\"abc\"/></Stream></Connect><Say>We&apos;re sorry, our assistant is unavailable right now. We will try again later. Goodbye.</Say><Hangup/></Response>"
        );
        // Twilio refuses inline `Twiml` of more than 4,000 characters.
        assert!(doc.len() < 4000);
    }

    #[test]
    fn values_are_escaped() {
        let doc = connect_stream("wss://h/m", &[("x", "a\"b<c>&'d\u{1}")]);
        assert!(
            doc.contains(r#"value="a&quot;b&lt;c&gt;&amp;&apos;d""#),
            "{doc}"
        );
    }

    #[test]
    fn a_refusal_says_its_words_then_hangs_up() {
        assert_eq!(
            say_and_hang_up("Busy <now> & later."),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Busy &lt;now&gt; &amp; later.</Say><Hangup/></Response>"
        );
        assert!(empty().ends_with("<Response/>"));
    }
}
