//! The fake's model of a session's configuration: strict validation of `session.update` (the
//! server's schema is `extra='forbid'`), the resolved config echoed in `session.updated` /
//! `session.ready`, and the mutability rules after `session.ready` (reference §2.1, §3.2).
//!
//! Error-code choice, where the reference leaves room: anything the server's pydantic schema
//! would refuse (unknown keys, wrong types, values outside an enum or range) is
//! `invalid_format`, as live `greeting: null` was; an unknown voice is `invalid_value`; an inline
//! `llm` is `invalid_config` (Appendix A.6).

use serde_json::{Map, Value, json};

/// Voice used when `output.voice` is omitted (the docs' examples use it; the default is not
/// documented).
pub const DEFAULT_VOICE: &str = "alba";

const SESSION_KEYS: &[&str] = &[
    "agent_id",
    "system_prompt",
    "greeting",
    "tools",
    "input",
    "output",
    "llm",
    "pre_connect_requests",
    "webhook",
];

/// `format.encoding` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// PCM16 LE mono 24 kHz.
    Pcm,
    /// G.711 μ-law 8 kHz.
    Pcmu,
    /// G.711 A-law 8 kHz.
    Pcma,
}

impl Encoding {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "audio/pcm" => Some(Self::Pcm),
            "audio/pcmu" => Some(Self::Pcmu),
            "audio/pcma" => Some(Self::Pcma),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Pcm => "audio/pcm",
            Self::Pcmu => "audio/pcmu",
            Self::Pcma => "audio/pcma",
        }
    }

    pub(super) fn sample_rate(self) -> u32 {
        match self {
            Self::Pcm => 24_000,
            Self::Pcmu | Self::Pcma => 8_000,
        }
    }

    /// Bytes of audio per millisecond.
    pub(super) fn bytes_per_ms(self) -> usize {
        match self {
            Self::Pcm => 48,
            Self::Pcmu | Self::Pcma => 8,
        }
    }

    fn format_value(self) -> Value {
        json!({ "encoding": self.name(), "sample_rate": self.sample_rate() })
    }
}

/// Why a `session.update` (or part of it) was refused.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reject {
    pub code: &'static str,
    pub message: String,
    /// Offending field, relative to `session` (e.g. `output.voice`).
    pub param: Option<String>,
}

impl Reject {
    fn format(param: &str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_format",
            message: message.into(),
            param: Some(param.to_string()),
        }
    }
}

/// A schema-valid `session.update`, field by field (absent = not in the message).
#[derive(Debug, Clone, Default)]
pub(super) struct Update {
    pub agent_id: Option<String>,
    pub system_prompt: Option<String>,
    pub greeting: Option<String>,
    /// Resolved tool objects (server-side defaults filled in).
    pub tools: Option<Vec<Value>>,
    /// Validated `input` keys as sent (except `format`).
    pub input: Map<String, Value>,
    pub input_format: Option<Encoding>,
    pub voice: Option<String>,
    pub output_format: Option<Encoding>,
    pub volume: Option<Value>,
    /// Validated `output.type` when sent.
    pub output_type: Option<Value>,
    /// A non-empty inline `llm` (the resolved config echoes `llm: []`, so an empty one is
    /// allowed back).
    pub llm: bool,
    pub pre_connect_requests: Option<Vec<Value>>,
    pub webhook: Option<Value>,
}

impl Update {
    /// Whether anything other than `agent_id` was sent.
    pub(super) fn has_inline_fields(&self) -> bool {
        self.system_prompt.is_some()
            || self.greeting.is_some()
            || self.tools.is_some()
            || !self.input.is_empty()
            || self.input_format.is_some()
            || self.voice.is_some()
            || self.output_format.is_some()
            || self.volume.is_some()
            || self.output_type.is_some()
            || self.llm
            || self.pre_connect_requests.is_some()
            || self.webhook.is_some()
    }
}

/// Validate the `session` object of a `session.update` against the server's schema.
pub(super) fn parse_update(session: &Value) -> Result<Update, Reject> {
    let Some(obj) = session.as_object() else {
        return Err(Reject::format("session", "session must be an object"));
    };
    let mut up = Update::default();
    for (key, value) in obj {
        if !SESSION_KEYS.contains(&key.as_str()) {
            return Err(Reject::format(
                key,
                format!("Extra inputs are not permitted: session.{key}"),
            ));
        }
        match key.as_str() {
            "agent_id" => up.agent_id = Some(string(value, key)?),
            "system_prompt" => up.system_prompt = Some(string(value, key)?),
            // Live: `greeting: null` is rejected, so no null here.
            "greeting" => up.greeting = Some(string(value, key)?),
            "tools" => {
                let Some(items) = value.as_array() else {
                    return Err(Reject::format(key, "tools must be an array"));
                };
                let tools = items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| parse_tool(t, &format!("tools[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                up.tools = Some(tools);
            }
            "input" => parse_input(value, &mut up)?,
            "output" => parse_output(value, &mut up)?,
            "llm" => {
                let Some(items) = value.as_array() else {
                    return Err(Reject::format(key, "llm must be an array"));
                };
                up.llm = !items.is_empty();
            }
            "pre_connect_requests" => {
                let Some(items) = value.as_array() else {
                    return Err(Reject::format(key, "pre_connect_requests must be an array"));
                };
                if items.len() > 2 || items.iter().any(|i| !i.is_object()) {
                    return Err(Reject::format(
                        key,
                        "pre_connect_requests takes at most 2 objects",
                    ));
                }
                up.pre_connect_requests = Some(items.clone());
            }
            "webhook" if !value.is_null() => up.webhook = Some(parse_webhook(value)?),
            _ => {}
        }
    }
    Ok(up)
}

fn string(v: &Value, param: &str) -> Result<String, Reject> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| Reject::format(param, format!("{param} must be a string")))
}

fn object<'a>(v: &'a Value, param: &str) -> Result<&'a Map<String, Value>, Reject> {
    v.as_object()
        .ok_or_else(|| Reject::format(param, format!("{param} must be an object")))
}

fn number_in(v: &Value, param: &str, lo: f64, hi: f64) -> Result<(), Reject> {
    match v.as_f64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(Reject::format(
            param,
            format!("{param} must be a number between {lo} and {hi}"),
        )),
    }
}

/// Integers as pydantic's lax mode takes them (`1000` or `1000.0`).
fn integer_in(v: &Value, param: &str, lo: i64, hi: i64) -> Result<(), Reject> {
    let n = v
        .as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(Reject::format(
            param,
            format!("{param} must be an integer between {lo} and {hi}"),
        )),
    }
}

fn string_list(v: &Value, param: &str, max: usize) -> Result<(), Reject> {
    match v.as_array() {
        Some(items) if items.len() <= max && items.iter().all(Value::is_string) => Ok(()),
        _ => Err(Reject::format(
            param,
            format!("{param} must be a list of at most {max} strings"),
        )),
    }
}

fn one_of(v: &Value, param: &str, allowed: &[&str]) -> Result<(), Reject> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(Reject::format(
            param,
            format!("{param} must be one of {}", allowed.join(", ")),
        )),
    }
}

fn parse_format(v: &Value, param: &str) -> Result<Encoding, Reject> {
    let obj = object(v, param)?;
    let enc_param = format!("{param}.encoding");
    let Some(enc) = obj.get("encoding") else {
        return Err(Reject::format(&enc_param, "Field required"));
    };
    let encoding = enc.as_str().and_then(Encoding::parse).ok_or_else(|| {
        Reject::format(
            &enc_param,
            "encoding must be one of audio/pcm, audio/pcmu, audio/pcma",
        )
    })?;
    for (key, value) in obj {
        match key.as_str() {
            "encoding" => {}
            // The schema only has `sample_rate` on the PCM variant, and only 24000 there.
            "sample_rate" if encoding == Encoding::Pcm => {
                if value.as_u64() != Some(24_000) {
                    return Err(Reject::format(
                        &format!("{param}.sample_rate"),
                        "sample_rate for audio/pcm must be 24000",
                    ));
                }
            }
            _ => {
                return Err(Reject::format(
                    &format!("{param}.{key}"),
                    format!("Extra inputs are not permitted for {}", encoding.name()),
                ));
            }
        }
    }
    Ok(encoding)
}

fn parse_input(v: &Value, up: &mut Update) -> Result<(), Reject> {
    let obj = object(v, "input")?;
    for (key, value) in obj {
        let param = format!("input.{key}");
        match key.as_str() {
            "format" => {
                up.input_format = Some(parse_format(value, &param)?);
                continue;
            }
            "type" => one_of(value, &param, &["audio"])?,
            _ if value.is_null() => {}
            "keyterms" => string_list(value, &param, 100)?,
            "transcription_mode" => {
                one_of(value, &param, &["min_latency", "balanced", "max_accuracy"])?;
            }
            "transcription_prompt" => {
                let s = string(value, &param)?;
                if s.chars().count() > 1750 {
                    return Err(Reject::format(&param, "at most 1750 characters"));
                }
            }
            "language_codes" => string_list(value, &param, 100)?,
            "voice_focus" => one_of(value, &param, &["near-field", "far-field"])?,
            "voice_focus_threshold" => number_in(value, &param, 0.0, 1.0)?,
            "continuous_partials" => {
                if !value.is_boolean() {
                    return Err(Reject::format(&param, "must be a boolean"));
                }
            }
            "turn_detection" => parse_turn_detection(value)?,
            _ => {
                return Err(Reject::format(&param, "Extra inputs are not permitted"));
            }
        }
        up.input.insert(key.clone(), value.clone());
    }
    Ok(())
}

fn parse_turn_detection(v: &Value) -> Result<(), Reject> {
    let obj = object(v, "input.turn_detection")?;
    for (key, value) in obj {
        let param = format!("input.turn_detection.{key}");
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "vad_threshold" => number_in(value, &param, 0.0, 1.0)?,
            "min_silence" | "max_silence" => integer_in(value, &param, 0, i64::from(u32::MAX))?,
            "interruption_delay" => integer_in(value, &param, 0, 1000)?,
            "interrupt_response" => {
                if !value.is_boolean() {
                    return Err(Reject::format(&param, "must be a boolean"));
                }
            }
            "type" => one_of(value, &param, &["server_vad", "semantic_vad"])?,
            "uninterruptible_turns" => string_list(value, &param, usize::MAX)?,
            _ => return Err(Reject::format(&param, "Extra inputs are not permitted")),
        }
    }
    Ok(())
}

fn parse_output(v: &Value, up: &mut Update) -> Result<(), Reject> {
    let obj = object(v, "output")?;
    for (key, value) in obj {
        let param = format!("output.{key}");
        match key.as_str() {
            "type" => {
                one_of(value, &param, &["audio"])?;
                up.output_type = Some(value.clone());
            }
            "voice" => up.voice = Some(string(value, &param)?),
            "format" => up.output_format = Some(parse_format(value, &param)?),
            "volume" => {
                if !value.is_null() {
                    number_in(value, &param, 0.0, 100.0)?;
                }
                up.volume = Some(value.clone());
            }
            _ => return Err(Reject::format(&param, "Extra inputs are not permitted")),
        }
    }
    Ok(())
}

const TOOL_KEYS: &[&str] = &[
    "type",
    "name",
    "description",
    "parameters",
    "execution_mode",
    "timeout_seconds",
    "response_instructions",
    "http",
];

/// A tool in the flat form (reference §6.1), with the server's defaults filled in as the
/// resolved config echoes them.
fn parse_tool(v: &Value, param: &str) -> Result<Value, Reject> {
    let obj = object(v, param)?;
    if obj.contains_key("function") {
        // OpenAI's nested form is the commonest mistake; the schema forbids the extra key.
        return Err(Reject::format(
            &format!("{param}.function"),
            "Extra inputs are not permitted: tools use the flat form {type, name, description, parameters}, not OpenAI's nested `function` object",
        ));
    }
    for key in obj.keys() {
        if !TOOL_KEYS.contains(&key.as_str()) {
            return Err(Reject::format(
                &format!("{param}.{key}"),
                "Extra inputs are not permitted",
            ));
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => {}
        _ => {
            return Err(Reject::format(
                &format!("{param}.type"),
                "tool type must be \"function\"",
            ));
        }
    }
    let name = match obj.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(Reject::format(
                &format!("{param}.name"),
                "tool name is required and must be a non-empty string",
            ));
        }
    };
    let description = match obj.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(d) => string(d, &format!("{param}.description"))?,
    };
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}, "required": []}),
        Some(p) => {
            let p_obj = object(p, &format!("{param}.parameters"))?;
            // Light validation only, as the real service does.
            if let Some(props) = p_obj.get("properties")
                && !props.is_object()
            {
                return Err(Reject::format(
                    &format!("{param}.parameters.properties"),
                    "properties must be an object",
                ));
            }
            p.clone()
        }
    };
    let execution_mode = match obj.get("execution_mode") {
        None | Some(Value::Null) => "interactive".to_string(),
        Some(m) => {
            one_of(
                m,
                &format!("{param}.execution_mode"),
                &["interactive", "hold"],
            )?;
            string(m, param)?
        }
    };
    let timeout = match obj.get("timeout_seconds") {
        None | Some(Value::Null) => json!(120),
        Some(t) => {
            number_in(t, &format!("{param}.timeout_seconds"), 1.0, 300.0)?;
            t.clone()
        }
    };
    let response_instructions = match obj.get("response_instructions") {
        None | Some(Value::Null) => Value::Null,
        Some(r) => {
            let r_obj = object(r, &format!("{param}.response_instructions"))?;
            for (k, s) in r_obj {
                let p = format!("{param}.response_instructions.{k}");
                if !matches!(k.as_str(), "success" | "error") {
                    return Err(Reject::format(&p, "Extra inputs are not permitted"));
                }
                if !s.is_null() && string(s, &p)?.chars().count() > 500 {
                    return Err(Reject::format(&p, "at most 500 characters"));
                }
            }
            r.clone()
        }
    };
    let http = match obj.get("http") {
        None | Some(Value::Null) => Value::Null,
        Some(h) => {
            let h_obj = object(h, &format!("{param}.http"))?;
            if !h_obj.get("url").is_some_and(Value::is_string) {
                return Err(Reject::format(
                    &format!("{param}.http.url"),
                    "Field required",
                ));
            }
            h.clone()
        }
    };
    Ok(json!({
        "type": "function",
        "name": name,
        "description": description,
        "parameters": parameters,
        "execution_mode": execution_mode,
        "timeout_seconds": timeout,
        "response_instructions": response_instructions,
        "http": http,
    }))
}

fn parse_webhook(v: &Value) -> Result<Value, Reject> {
    let obj = object(v, "webhook")?;
    for (key, value) in obj {
        let param = format!("webhook.{key}");
        match key.as_str() {
            "url" => {
                let url = string(value, &param)?;
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(Reject {
                        code: "invalid_webhook",
                        message: "webhook url must be an http(s) URL".into(),
                        param: Some(param),
                    });
                }
            }
            "events" => string_list(value, &param, usize::MAX)?,
            "secret" => {
                string(value, &param)?;
            }
            _ => return Err(Reject::format(&param, "Extra inputs are not permitted")),
        }
    }
    if !obj.contains_key("url") {
        return Err(Reject::format("webhook.url", "Field required"));
    }
    Ok(v.clone())
}

/// Turn-detection parameters the fake acts on, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct TurnParams {
    pub vad_threshold: f64,
    /// Audio milliseconds of silence that end a user turn.
    pub min_silence_ms: usize,
    pub interrupt_response: bool,
    /// Audio milliseconds of user speech before it interrupts a reply.
    pub interruption_delay_ms: usize,
}

/// A configured session.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub id: String,
    pub system_prompt: String,
    pub greeting: Option<String>,
    pub tools: Vec<Value>,
    input: Map<String, Value>,
    input_encoding: Encoding,
    voice: String,
    output_encoding: Encoding,
    volume: Value,
    pre_connect_requests: Vec<Value>,
    webhook: Option<Value>,
}

impl Settings {
    /// Settings from the first (already validated) update.
    pub(super) fn from_first(id: String, up: &Update) -> Self {
        let mut input = Map::new();
        for key in [
            "keyterms",
            "turn_detection",
            "transcription_mode",
            "transcription_prompt",
            "language_codes",
            "voice_focus",
            "voice_focus_threshold",
            "continuous_partials",
        ] {
            input.insert(key.to_string(), Value::Null);
        }
        let mut s = Self {
            id,
            system_prompt: String::new(),
            greeting: None,
            tools: Vec::new(),
            input,
            input_encoding: up.input_format.unwrap_or(Encoding::Pcm),
            voice: up.voice.clone().unwrap_or_else(|| DEFAULT_VOICE.into()),
            output_encoding: up.output_format.unwrap_or(Encoding::Pcm),
            volume: Value::Null,
            pre_connect_requests: up.pre_connect_requests.clone().unwrap_or_default(),
            webhook: None,
        };
        s.greeting = up.greeting.clone();
        s.apply_mutable(up);
        s
    }

    /// Apply the fields that may change after `session.ready`. `input.format` is accepted but
    /// kept as first set (the reference calls it set-once).
    pub(super) fn apply_mutable(&mut self, up: &Update) {
        if let Some(p) = &up.system_prompt {
            self.system_prompt = p.clone();
        }
        if let Some(t) = &up.tools {
            self.tools = t.clone();
        }
        for (k, v) in &up.input {
            if k != "type" {
                self.input.insert(k.clone(), v.clone());
            }
        }
        if let Some(v) = &up.volume {
            self.volume = v.clone();
        }
        if let Some(w) = &up.webhook {
            self.webhook = Some(w.clone());
        }
    }

    pub(super) fn input_encoding(&self) -> Encoding {
        self.input_encoding
    }

    pub(super) fn output_encoding(&self) -> Encoding {
        self.output_encoding
    }

    /// `output.volume` 0 means silent.
    pub(super) fn muted(&self) -> bool {
        self.volume.as_f64() == Some(0.0)
    }

    pub(super) fn tool_timeout_secs(&self, name: &str) -> f64 {
        self.tools
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["timeout_seconds"].as_f64())
            .unwrap_or(120.0)
    }

    pub(super) fn turn(&self) -> TurnParams {
        let td = &self.input["turn_detection"];
        let mode = self.input["transcription_mode"]
            .as_str()
            .unwrap_or("balanced");
        let num = |k: &str| td.get(k).and_then(Value::as_f64);
        let min_silence = num("min_silence").unwrap_or(600.0);
        // A max_silence below min_silence forces the turn to end earlier.
        let min_silence = num("max_silence").map_or(min_silence, |m| m.min(min_silence));
        TurnParams {
            vad_threshold: num("vad_threshold").unwrap_or(0.5),
            min_silence_ms: min_silence.max(0.0) as usize,
            interrupt_response: td
                .get("interrupt_response")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            interruption_delay_ms: num("interruption_delay")
                .unwrap_or(if mode == "min_latency" { 0.0 } else { 500.0 })
                .max(0.0) as usize,
        }
    }

    /// The resolved config, shaped like the live `session.updated.config` (§3.2).
    pub(super) fn config(&self) -> Value {
        let mut input = Map::new();
        input.insert("type".into(), json!("audio"));
        input.insert("format".into(), self.input_encoding.format_value());
        for (k, v) in &self.input {
            input.insert(k.clone(), v.clone());
        }
        let mut cfg = json!({
            "id": self.id,
            "system_prompt": self.system_prompt,
            "greeting": self.greeting,
            "input": input,
            "output": {
                "type": "audio",
                "voice": self.voice,
                "format": self.output_encoding.format_value(),
                "volume": self.volume,
            },
            "tools": self.tools,
            "llm": [],
            "pre_connect_requests": self.pre_connect_requests,
        });
        if let (Some(w), Some(obj)) = (&self.webhook, cfg.as_object_mut()) {
            // Never echo the secret back.
            let mut w = w.clone();
            if let Some(wo) = w.as_object_mut() {
                wo.remove("secret");
            }
            obj.insert("webhook".into(), w);
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(v: Value) -> Reject {
        parse_update(&v).unwrap_err()
    }

    #[test]
    fn strict_schema() {
        assert_eq!(
            reject(json!({"voice": "alba"})).param.as_deref(),
            Some("voice")
        );
        assert_eq!(reject(json!({"greeting": null})).code, "invalid_format");
        let r =
            reject(json!({"input": {"format": {"encoding": "audio/pcmu", "sample_rate": 8000}}}));
        assert_eq!(r.param.as_deref(), Some("input.format.sample_rate"));
        let r =
            reject(json!({"output": {"format": {"encoding": "audio/pcm", "sample_rate": 16000}}}));
        assert_eq!(r.param.as_deref(), Some("output.format.sample_rate"));
        assert!(
            parse_update(
                &json!({"output": {"format": {"encoding": "audio/pcm", "sample_rate": 24000}}})
            )
            .is_ok()
        );
        let r = reject(json!({"input": {"format": {"encoding": "audio/wav"}}}));
        assert_eq!(r.param.as_deref(), Some("input.format.encoding"));
        let r = reject(json!({"input": {"turn_detection": {"vad_threshold": 1.5}}}));
        assert_eq!(
            r.param.as_deref(),
            Some("input.turn_detection.vad_threshold")
        );
        let r = reject(json!({"input": {"turn_detection": {"interruption_delay": 1001}}}));
        assert_eq!(
            r.param.as_deref(),
            Some("input.turn_detection.interruption_delay")
        );
        let r = reject(json!({"input": {"turn_detection": {"silence": 3}}}));
        assert_eq!(r.code, "invalid_format");
        let r = reject(json!({"tools": [{"type": "function", "function": {"name": "x"}}]}));
        assert_eq!(r.param.as_deref(), Some("tools[0].function"));
        let r = reject(json!({"tools": [{"name": "x"}]}));
        assert_eq!(r.param.as_deref(), Some("tools[0].type"));
        let r = reject(json!({"webhook": {"url": "ftp://x"}}));
        assert_eq!(r.code, "invalid_webhook");
    }

    #[test]
    fn resolved_config_echoes_pcmu_at_8000() {
        let up = parse_update(&json!({
            "greeting": "hi",
            "input": {"format": {"encoding": "audio/pcmu"}},
            "output": {"format": {"encoding": "audio/pcmu"}, "voice": "jane"},
            "tools": [{"type": "function", "name": "end_call"}],
        }))
        .unwrap();
        let s = Settings::from_first("sess_x".into(), &up);
        let c = s.config();
        assert_eq!(c["input"]["format"]["sample_rate"], 8000);
        assert_eq!(c["output"]["format"]["encoding"], "audio/pcmu");
        assert_eq!(c["output"]["voice"], "jane");
        assert_eq!(c["tools"][0]["execution_mode"], "interactive");
        assert_eq!(c["tools"][0]["timeout_seconds"], 120);
        assert_eq!(c["llm"], json!([]));
        assert_eq!(s.turn().min_silence_ms, 600);
        assert_eq!(s.turn().interruption_delay_ms, 500);
    }
}
