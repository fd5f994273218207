//! TwiML for the fake: a small strict XML parser (no XML crate in the tree) and the verbs the
//! dialer uses — `<Connect><Stream>` with `<Parameter>`s, `<Say>`, `<Pause>`, `<Hangup>`, and
//! `<Redirect>`. Malformed XML is a document parse failure (Twilio error 12100); elements that
//! are well-formed but unknown or not simulated become warnings and are skipped, as Twilio
//! skips what fails schema validation (12200).

/// A parsed `<Response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Document {
    pub verbs: Vec<Verb>,
    /// Schema warnings, as `"<code> <message>"`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verb {
    /// `loop` 0 repeats until the call ends.
    Say {
        text: String,
        repeat: u32,
    },
    Pause {
        seconds: u64,
    },
    Hangup,
    Connect(Connect),
    Redirect {
        url: String,
        method: String,
    },
    Dial(Dial),
}

/// `<Dial>` with one `<Number>` or `<Sip>` (or the number as its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dial {
    pub target: String,
    /// Seconds to ring (`timeout`, 5–600, default 30).
    pub timeout: u64,
    pub action: Option<String>,
    pub method: String,
    pub caller_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Connect {
    pub action: Option<String>,
    pub method: String,
    pub stream: StreamNoun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StreamNoun {
    /// Exactly as written (after entity unescaping): the signature covers this string.
    pub url: String,
    pub name: Option<String>,
    pub status_callback: Option<String>,
    pub status_callback_method: String,
    pub parameters: Vec<(String, String)>,
}

/// Verbs Twilio has that the simulator does not run.
const NOT_SIMULATED: &[&str] = &[
    "Play", "Gather", "Record", "Reject", "Enqueue", "Leave", "Sms", "Message", "Start", "Stop",
    "Pay", "Prompt", "Refer", "Echo", "Queue",
];

/// Parse a TwiML document. `Err` is the parse failure's description (error 12100).
pub(super) fn parse(text: &str) -> Result<Document, String> {
    let root = XmlParser::new(text).document()?;
    if root.name != "Response" {
        return Err(format!(
            "root element is <{}>, expected <Response>",
            shown(&root.name)
        ));
    }
    let mut doc = Document {
        verbs: Vec::new(),
        warnings: Vec::new(),
    };
    for node in &root.children {
        let el = match node {
            Node::Text(t) if t.trim().is_empty() => continue,
            Node::Text(t) => return Err(format!("text outside a verb: {:?}", clip(t.trim()))),
            Node::Element(el) => el,
        };
        match el.name.as_str() {
            "Say" => {
                let text = el.text();
                let text = text.trim();
                let repeat = match el.attr("loop") {
                    None => 1,
                    Some(v) => v.trim().parse::<u32>().unwrap_or_else(|_| {
                        doc.warnings
                            .push(format!("13511 Say: invalid loop value {:?}", clip(v)));
                        1
                    }),
                };
                if text.is_empty() {
                    doc.warnings.push("13520 Say: empty text".into());
                } else {
                    doc.verbs.push(Verb::Say {
                        text: text.to_string(),
                        repeat,
                    });
                }
            }
            "Pause" => {
                let seconds = match el.attr("length") {
                    None => 1,
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if n > 0 => n,
                        _ => {
                            doc.warnings
                                .push(format!("13910 Pause: invalid length {:?}", clip(v)));
                            1
                        }
                    },
                };
                doc.verbs.push(Verb::Pause { seconds });
            }
            "Hangup" => doc.verbs.push(Verb::Hangup),
            "Redirect" => {
                let url = el.text().trim().to_string();
                if url.is_empty() {
                    doc.warnings.push("12200 Redirect: no URL".into());
                } else {
                    doc.verbs.push(Verb::Redirect {
                        url,
                        method: el.attr("method").unwrap_or("POST").to_string(),
                    });
                }
            }
            "Dial" => {
                if let Some(d) = dial(el, &mut doc.warnings) {
                    doc.verbs.push(Verb::Dial(d));
                }
            }
            "Connect" => {
                if let Some(c) = connect(el, &mut doc.warnings) {
                    doc.verbs.push(Verb::Connect(c));
                }
            }
            name if NOT_SIMULATED.contains(&name) => doc
                .warnings
                .push(format!("12200 <{name}> is not simulated; skipped")),
            name => doc.warnings.push(format!(
                "12200 Schema validation: unknown verb <{}>; skipped",
                shown(name)
            )),
        }
    }
    Ok(doc)
}

fn dial(el: &Element, warnings: &mut Vec<String>) -> Option<Dial> {
    let mut target = None;
    for child in el.elements() {
        match child.name.as_str() {
            "Number" | "Sip" if target.is_none() => target = Some(child.text().trim().to_string()),
            other => warnings.push(format!(
                "12200 Dial: <{}> is not simulated; skipped",
                shown(other)
            )),
        }
    }
    let target = target.unwrap_or_else(|| el.text().trim().to_string());
    if target.is_empty() {
        warnings.push("12200 Dial: nothing to dial; skipped".into());
        return None;
    }
    let timeout = match el.attr("timeout") {
        None => 30,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (5..=600).contains(&n) => n,
            _ => {
                warnings.push(format!("13212 Dial: invalid timeout {:?}", clip(v)));
                30
            }
        },
    };
    Some(Dial {
        target,
        timeout,
        action: el.attr("action").map(str::to_string),
        method: el.attr("method").unwrap_or("POST").to_string(),
        caller_id: el.attr("callerId").map(str::to_string),
    })
}

fn connect(el: &Element, warnings: &mut Vec<String>) -> Option<Connect> {
    let mut stream = None;
    for child in el.elements() {
        match child.name.as_str() {
            "Stream" if stream.is_none() => stream = stream_noun(child, warnings),
            "Stream" => warnings.push("12200 Connect: only one <Stream> per <Connect>".into()),
            other => warnings.push(format!(
                "12200 Connect: <{}> is not simulated; skipped",
                shown(other)
            )),
        }
    }
    let Some(stream) = stream else {
        warnings.push("12200 Connect: no <Stream>; skipped".into());
        return None;
    };
    Some(Connect {
        action: el.attr("action").map(str::to_string),
        method: el.attr("method").unwrap_or("POST").to_string(),
        stream,
    })
}

fn stream_noun(el: &Element, warnings: &mut Vec<String>) -> Option<StreamNoun> {
    let Some(url) = el.attr("url") else {
        warnings.push("12200 Stream: the url attribute is required".into());
        return None;
    };
    let mut parameters = Vec::new();
    for child in el.elements() {
        if child.name != "Parameter" {
            warnings.push(format!("12200 Stream: unexpected <{}>", shown(&child.name)));
            continue;
        }
        let (Some(name), value) = (child.attr("name"), child.attr("value").unwrap_or("")) else {
            warnings.push("12200 Parameter: the name attribute is required".into());
            continue;
        };
        // Twilio's limit is on each pair: name plus value under 500 characters.
        if name.chars().count() + value.chars().count() >= 500 {
            warnings.push(format!(
                "12200 Parameter {:?}: name and value must total under 500 characters",
                clip(name)
            ));
            continue;
        }
        parameters.push((name.to_string(), value.to_string()));
    }
    Some(StreamNoun {
        url: url.to_string(),
        name: el.attr("name").map(str::to_string),
        status_callback: el.attr("statusCallback").map(str::to_string),
        status_callback_method: el
            .attr("statusCallbackMethod")
            .unwrap_or("POST")
            .to_string(),
        parameters,
    })
}

/// At most 60 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A name or other piece of the document as it may appear in a message: at most 60
/// characters, with control characters (and those that reorder text) escaped, so a hostile
/// document cannot break a message across lines or make it a megabyte long.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(60) {
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

// ---- XML ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// All text inside, nested elements (SSML in `<Say>`) included.
    fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => out.push_str(&e.text()),
            }
        }
        out
    }
}

/// Nesting deeper than this is refused rather than recursed into (no stack overflow on
/// hostile input).
const MAX_DEPTH: usize = 32;

struct XmlParser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> XmlParser<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.pos))
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
    }

    /// Skip to just after `end`; error if it never comes.
    fn skip_past(&mut self, end: &str, what: &str) -> Result<(), String> {
        match self.rest().find(end) {
            Some(i) => {
                self.pos += i + end.len();
                Ok(())
            }
            None => self.err(&format!("unterminated {what}")),
        }
    }

    /// Whitespace, comments and processing instructions between top-level items.
    fn misc(&mut self) -> Result<(), String> {
        loop {
            self.skip_ws();
            if self.rest().starts_with("<!--") {
                self.skip_past("-->", "comment")?;
            } else if self.rest().starts_with("<?") {
                self.skip_past("?>", "processing instruction")?;
            } else if self.rest().starts_with("<!") {
                return self.err("DTDs are not accepted");
            } else {
                return Ok(());
            }
        }
    }

    fn document(&mut self) -> Result<Element, String> {
        if let Some(stripped) = self.s.strip_prefix('\u{feff}') {
            self.s = stripped;
        }
        self.skip_ws();
        if self.rest().starts_with("<?xml") {
            self.skip_past("?>", "XML declaration")?;
        }
        self.misc()?;
        if !self.rest().starts_with('<') {
            return self.err("expected the root element");
        }
        let root = self.element(0)?;
        self.misc()?;
        if !self.rest().is_empty() {
            return self.err("content after the root element");
        }
        Ok(root)
    }

    fn name(&mut self) -> Result<String, String> {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic()
                    || c == '_'
                    || c == ':'
                    || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.')))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return self.err("expected a name");
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > MAX_DEPTH {
            return self.err("elements nested too deeply");
        }
        // Caller saw '<'.
        self.pos += 1;
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before = self.pos;
            self.skip_ws();
            let rest = self.rest();
            if rest.starts_with("/>") {
                self.pos += 2;
                return Ok(Element {
                    name,
                    attrs,
                    children: Vec::new(),
                });
            }
            if rest.starts_with('>') {
                self.pos += 1;
                break;
            }
            if self.pos == before {
                return self.err(&format!("malformed tag <{}>", shown(&name)));
            }
            let attr = self.name()?;
            let shown_attr = shown(&attr);
            self.skip_ws();
            if !self.rest().starts_with('=') {
                return self.err(&format!("attribute {shown_attr} has no value"));
            }
            self.pos += 1;
            self.skip_ws();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return self.err(&format!("attribute {shown_attr} is not quoted")),
            };
            self.pos += 1;
            let Some(end) = self.rest().find(quote) else {
                return self.err(&format!("unterminated value of {shown_attr}"));
            };
            let raw = &self.rest()[..end];
            if raw.contains('<') {
                return self.err(&format!("'<' in the value of {shown_attr}"));
            }
            let value = unescape(raw).map_err(|e| format!("{e} in attribute {shown_attr}"))?;
            self.pos += end + 1;
            if attrs.iter().any(|(k, _)| *k == attr) {
                return self.err(&format!("duplicate attribute {shown_attr}"));
            }
            attrs.push((attr, value));
        }
        let mut children = Vec::new();
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return self.err(&format!("<{}> is never closed", shown(&name)));
            }
            if let Some(after) = rest.strip_prefix("</") {
                let close_len = after
                    .find('>')
                    .ok_or_else(|| format!("unterminated end tag at byte {}", self.pos))?;
                let close = after[..close_len].trim_end();
                if close != name {
                    return self.err(&format!("</{}> closes <{}>", shown(close), shown(&name)));
                }
                self.pos += 2 + close_len + 1;
                return Ok(Element {
                    name,
                    attrs,
                    children,
                });
            }
            if rest.starts_with("<!--") {
                self.skip_past("-->", "comment")?;
            } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let Some(end) = after.find("]]>") else {
                    return self.err("unterminated CDATA section");
                };
                children.push(Node::Text(after[..end].to_string()));
                self.pos += "<![CDATA[".len() + end + 3;
            } else if rest.starts_with("<?") {
                self.skip_past("?>", "processing instruction")?;
            } else if rest.starts_with("<!") {
                return self.err("unexpected declaration");
            } else if rest.starts_with('<') {
                children.push(Node::Element(self.element(depth + 1)?));
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = unescape(&rest[..end])?;
                children.push(Node::Text(text));
                self.pos += end;
            }
        }
    }
}

/// Resolve the five predefined entities and character references; a bare `&` is an error.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            return Err("unescaped '&'".into());
        };
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .filter(|&c| c != '\0')
                    .ok_or_else(|| format!("unknown entity &{};", shown(entity)))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialer_document() {
        let doc = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect>
    <Stream url="wss://agent.example.com/media" name="agent" statusCallback="https://agent.example.com/s">
      <Parameter name="session" value="abc&amp;123"/>
      <Parameter name='lead' value="42" />
    </Stream>
  </Connect>
  <!-- fallback -->
  <Say>Sorry, we lost the connection. Goodbye.</Say>
  <Pause length="2"/>
  <Hangup/>
</Response>"#,
        )
        .unwrap();
        assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
        assert_eq!(doc.verbs.len(), 4);
        let Verb::Connect(c) = &doc.verbs[0] else {
            panic!("{:?}", doc.verbs[0])
        };
        assert_eq!(c.stream.url, "wss://agent.example.com/media");
        assert_eq!(c.stream.name.as_deref(), Some("agent"));
        assert_eq!(
            c.stream.parameters,
            vec![
                ("session".to_string(), "abc&123".to_string()),
                ("lead".to_string(), "42".to_string())
            ]
        );
        assert_eq!(
            doc.verbs[1],
            Verb::Say {
                text: "Sorry, we lost the connection. Goodbye.".into(),
                repeat: 1
            }
        );
        assert_eq!(doc.verbs[2], Verb::Pause { seconds: 2 });
        assert_eq!(doc.verbs[3], Verb::Hangup);
    }

    #[test]
    fn entities_are_unescaped() {
        let doc = parse(
            "<Response><Say>a &lt;b&gt; &quot;c&quot; &apos;d&apos; &#65;&#x42;</Say></Response>",
        )
        .unwrap();
        assert_eq!(
            doc.verbs,
            vec![Verb::Say {
                text: "a <b> \"c\" 'd' AB".into(),
                repeat: 1
            }]
        );
    }

    #[test]
    fn malformed_documents_fail() {
        for bad in [
            "",
            "<Response>",
            "<Response></Respons>",
            "<Response><Say>a & b</Say></Response>",
            "<Response><Say>&bogus;</Say></Response>",
            "<Response><Pause length=2/></Response>",
            "<Response a=\"1\" a=\"2\"/>",
            "<Response/><Response/>",
            "<Response>hello</Response>",
            "<Hangup/>",
            "<!DOCTYPE x><Response/>",
            "<Response><Stream url=\"a<b\"/></Response>",
            "<Response><Say>é</Say>",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let doc = format!(
            "<Response>{}{}</Response>",
            "<a>".repeat(10_000),
            "</a>".repeat(10_000)
        );
        assert!(parse(&doc).is_err());
    }

    #[test]
    fn unknown_and_unsimulated_verbs_are_warnings() {
        let doc = parse("<Response><Play>x.mp3</Play><Bogus/><Hangup/></Response>").unwrap();
        assert_eq!(doc.verbs, vec![Verb::Hangup]);
        assert_eq!(doc.warnings.len(), 2);
    }

    #[test]
    fn stream_without_url_and_long_parameters_warn() {
        let long = "x".repeat(500);
        let doc = parse(&format!(
            "<Response><Connect><Stream url=\"ws://127.0.0.1/m\"><Parameter name=\"a\" value=\"{long}\"/></Stream></Connect><Connect><Stream/></Connect></Response>"
        ))
        .unwrap();
        assert_eq!(doc.verbs.len(), 1);
        let Verb::Connect(c) = &doc.verbs[0] else {
            panic!()
        };
        assert!(c.stream.parameters.is_empty());
        assert_eq!(doc.warnings.len(), 3, "{:?}", doc.warnings);
    }

    /// Longest parse failure or warning: a document's names and text are quoted cut short.
    const MAX_MESSAGE: usize = 200;

    /// Documents as the dialer and Twilio's docs write them.
    const DOCUMENTS: [&str; 3] = [
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://example.ngrok.app/twilio/media"><Parameter name="token" value="02534d211f11e456f8e519d447dd8e76"/></Stream></Connect><Say>We&apos;re sorry, our assistant is unavailable right now. Goodbye.</Say><Hangup/></Response>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect action="https://example.com/after" method="GET">
    <Stream url="wss://agent.example.com/media" name="agent" statusCallback="https://agent.example.com/s">
      <Parameter name="session" value="abc&amp;123"/>
      <Parameter name='lead' value="42" />
    </Stream>
  </Connect>
  <!-- fallback -->
  <Say loop="2">Sorry, <emphasis>we lost</emphasis> the connection. <![CDATA[Goodbye & <bye>.]]></Say>
  <Pause length="2"/>
  <Redirect method="GET">https://example.com/next?a=1&amp;b=2</Redirect>
  <Hangup/>
</Response>"#,
        "\u{feff}<Response><Play>x.mp3</Play><Bogus a='1'/><Say>&#65;&#x42;</Say></Response>",
    ];

    /// Whatever the text (XML-ish pieces, documents damaged, nesting past the limit, names and
    /// values of any length and character), the parser ends in a document whose warnings are
    /// short printable lines, or in one such line saying why it failed.
    #[test]
    fn any_text_parses_or_is_refused_clearly() {
        use crate::props;
        use rand::Rng;
        const PIECES: [&str; 27] = [
            "<",
            ">",
            "</",
            "/>",
            "<Response>",
            "</Response>",
            "<Say>",
            "</Say>",
            "<Connect>",
            "</Connect>",
            "<Stream url=\"wss://h/m\">",
            "</Stream>",
            "<Parameter name=\"n\" value=\"v\"/>",
            "<Pause length=\"",
            "\"/>",
            "=",
            "\"",
            "'",
            "&amp;",
            "&#x",
            ";",
            "&",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "<?xml version=\"1.0\"?>",
        ];
        props::check(
            61,
            props::cases(),
            |rng| match rng.random_range(0..5) {
                0 => props::random_text(rng, &PIECES, 40),
                1 | 2 => {
                    let doc = DOCUMENTS[rng.random_range(0..DOCUMENTS.len())];
                    String::from_utf8_lossy(&props::mutate_bytes(rng, doc.as_bytes())).into_owned()
                }
                3 => {
                    // A name or value of any size and character where the parser quotes it.
                    let junk = if rng.random_bool(0.2) {
                        props::long_text(rng)
                    } else {
                        props::random_text(rng, &PIECES, 6)
                    };
                    let name: String = "Ab_".repeat(rng.random_range(1..5_000));
                    [
                        format!("<Response></{junk}>"),
                        format!("<Response><Say>&{junk};</Say></Response>"),
                        format!("<Response><Say a=\"&{junk};\">x</Say></Response>"),
                        format!("<{name}/>"),
                        format!("<Response><{name}/></Response>"),
                        format!("<Response><Connect><{name}/></Connect></Response>"),
                        format!("<Response><Connect><Stream url=\"u\"><{name}/></Stream></Connect></Response>"),
                        format!("<Response {name}/>"),
                        format!("<Response {name}=1/>"),
                        format!("<Response><{name}>"),
                        format!("<Response><Pause length=\"{junk}\"/></Response>"),
                        format!("<Response><Say loop=\"{junk}\">x</Say></Response>"),
                        format!("<Response>{junk}</Response>"),
                    ][rng.random_range(0..13)]
                    .clone()
                }
                _ => {
                    let depth = rng.random_range(1..200);
                    format!(
                        "<Response>{}{}",
                        "<Say>".repeat(depth),
                        "</Say>".repeat(depth)
                    ) + if rng.random_bool(0.5) {
                        "</Response>"
                    } else {
                        ""
                    }
                }
            },
            |text| match parse(text) {
                Ok(doc) => {
                    for w in &doc.warnings {
                        props::assert_clear(w, MAX_MESSAGE);
                    }
                }
                Err(e) => props::assert_clear(&e, MAX_MESSAGE),
            },
        );
    }

    #[test]
    fn hostile_names_do_not_break_messages() {
        for (text, expected) in [
            (
                "<Response></Res\nponse>",
                "</Res\\u{a}ponse> closes <Response> at byte 10",
            ),
            (
                "<Response><Say>&\u{1b}[2J;</Say></Response>",
                "unknown entity &\\u{1b}[2J;",
            ),
            (
                "<Response></\u{202e}x>",
                "</\\u{202e}x> closes <Response> at byte 10",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), expected);
        }
        let long = "A".repeat(100_000);
        let e = parse(&format!("<{long}/>")).unwrap_err();
        assert_eq!(
            e,
            format!("root element is <{}…>, expected <Response>", &long[..60])
        );
    }

    /// Text as a TwiML writer escapes it, for element content and attribute values alike.
    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    }

    fn render(verb: &Verb) -> String {
        match verb {
            Verb::Say { text, repeat } => {
                format!("<Say loop=\"{repeat}\">{}</Say>", escape(text))
            }
            Verb::Pause { seconds } => format!("<Pause length=\"{seconds}\"/>"),
            Verb::Hangup => "<Hangup/>".into(),
            Verb::Dial(d) => format!(
                "<Dial timeout=\"{}\" method=\"{}\"{}{}><Number>{}</Number></Dial>",
                d.timeout,
                escape(&d.method),
                d.action
                    .as_ref()
                    .map_or(String::new(), |a| format!(" action=\"{}\"", escape(a))),
                d.caller_id
                    .as_ref()
                    .map_or(String::new(), |c| format!(" callerId=\"{}\"", escape(c))),
                escape(&d.target)
            ),
            Verb::Redirect { url, method } => {
                format!(
                    "<Redirect method=\"{}\">{}</Redirect>",
                    escape(method),
                    escape(url)
                )
            }
            Verb::Connect(c) => {
                let action = c
                    .action
                    .as_ref()
                    .map_or(String::new(), |a| format!(" action=\"{}\"", escape(a)));
                let name = c
                    .stream
                    .name
                    .as_ref()
                    .map_or(String::new(), |n| format!(" name=\"{}\"", escape(n)));
                let parameters: String = c
                    .stream
                    .parameters
                    .iter()
                    .map(|(k, v)| {
                        format!("<Parameter name='{}' value='{}'/>", escape(k), escape(v))
                    })
                    .collect();
                format!(
                    "<Connect{action} method=\"{}\"><Stream url=\"{}\"{name}>{parameters}</Stream></Connect>",
                    escape(&c.method),
                    escape(&c.stream.url)
                )
            }
        }
    }

    #[test]
    fn dial_reads_its_number_or_sip_target_and_attributes() {
        let doc = parse(r#"<Response><Dial callerId="+15005550006" timeout="20" action="https://x/t/dial/1" method="POST"><Number>+12025550100</Number></Dial><Dial>+12025550102</Dial><Dial timeout="2"><Sip>sip:a@b</Sip></Dial></Response>"#).unwrap();
        assert_eq!(
            doc.verbs[0],
            Verb::Dial(Dial {
                target: "+12025550100".into(),
                timeout: 20,
                action: Some("https://x/t/dial/1".into()),
                method: "POST".into(),
                caller_id: Some("+15005550006".into()),
            })
        );
        assert!(
            matches!(&doc.verbs[1], Verb::Dial(d) if d.target == "+12025550102" && d.timeout == 30)
        );
        assert!(matches!(&doc.verbs[2], Verb::Dial(d) if d.target == "sip:a@b" && d.timeout == 30));
        assert_eq!(doc.warnings, ["13212 Dial: invalid timeout \"2\""]);
    }

    /// Any document the simulator can run, written out as TwiML with its text escaped, reads
    /// back as the same verbs with no warnings, whatever characters its text and URLs hold.
    #[test]
    fn written_documents_read_back() {
        use crate::props;
        use rand::Rng;
        // Say and Redirect read their text trimmed, and empty text is a warning.
        let text = |rng: &mut rand::rngs::StdRng, pieces: &[&str]| -> String {
            let t = props::random_text(rng, pieces, 12);
            let t = t.trim();
            if t.is_empty() {
                "x".to_string()
            } else {
                t.to_string()
            }
        };
        props::check(
            62,
            props::cases(),
            |rng| {
                (0..rng.random_range(0..5))
                    .map(|_| match rng.random_range(0..5) {
                        0 => Verb::Say {
                            text: text(rng, &["Hello", "&", "<b>", "]]>"]),
                            repeat: rng.random_range(0..=u32::MAX),
                        },
                        1 => Verb::Pause {
                            seconds: rng.random_range(1..=u64::MAX),
                        },
                        2 => Verb::Hangup,
                        3 => Verb::Redirect {
                            url: text(rng, &["https://h/", "?a=1&b=2"]),
                            method: ["GET", "POST"][rng.random_range(0..2)].into(),
                        },
                        _ => Verb::Connect(Connect {
                            action: rng.random_bool(0.5).then(|| text(rng, &["https://h/a"])),
                            method: "POST".into(),
                            stream: StreamNoun {
                                url: text(rng, &["wss://h/m", "'", "\""]),
                                name: rng.random_bool(0.5).then(|| text(rng, &[])),
                                status_callback: None,
                                status_callback_method: "POST".into(),
                                parameters: (0..rng.random_range(0..4))
                                    .map(|_| {
                                        (text(rng, &["token"]), props::random_text(rng, &[], 20))
                                    })
                                    .collect(),
                            },
                        }),
                    })
                    .collect::<Vec<Verb>>()
            },
            |verbs| {
                let xml = format!(
                    "<?xml version=\"1.0\"?><Response>{}</Response>",
                    verbs.iter().map(render).collect::<String>()
                );
                let doc = parse(&xml).unwrap();
                assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
                assert_eq!(&doc.verbs, verbs);
            },
        );
    }
}
