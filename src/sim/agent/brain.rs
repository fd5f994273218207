//! The fake agent's "LLM": a small deterministic, rule-based conversation for an appointment
//! reminder. It reacts to final user transcripts by keywords, to long silences, and to
//! `reply.create`; it decides what to say and which declared tools to call. It knows only what
//! it heard and the session's tool declarations (never the simulated callee's script), and it
//! never calls a tool that was not declared or passes a value outside a declared enum.

use serde_json::{Map, Value, json};

/// What the agent does next: one reply, and what follows it once its tool results are in.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    /// Words to speak; `None` is a silent tool pre-amble (live pre-ambles can be silent).
    pub speech: Option<String>,
    /// Tool calls sent after the reply's audio: (name, arguments).
    pub calls: Vec<(String, Value)>,
    /// The follow-up reply once every non-`end_call` call has a result.
    pub then: Option<Box<Plan>>,
    /// The follow-up instead, when some result came back with `is_error: true`.
    pub on_error: Option<Box<Plan>>,
    /// Completing this reply ends the conversation (whether or not `end_call` is declared).
    pub ends: bool,
}

impl Plan {
    pub(super) fn say(text: impl Into<String>) -> Self {
        Self {
            speech: Some(text.into()),
            calls: Vec::new(),
            then: None,
            on_error: None,
            ends: false,
        }
    }

    /// Whether a follow-up depends on tool results.
    pub(super) fn awaits_results(&self) -> bool {
        self.calls.iter().any(|(name, _)| name != END_CALL)
    }
}

pub(super) const END_CALL: &str = "end_call";
const RECORD_OUTCOME: &str = "record_outcome";
const OPT_OUT: &str = "opt_out";
const TRANSFER_CALL: &str = "transfer_call";
/// What the agent says when the call is being handed to a person.
pub(super) const HAND_OFF_LINE: &str =
    "Of course. I'm connecting you to a colleague now, please hold.";

/// Silence prompts before the agent gives up.
const MAX_SILENCES: u8 = 2;
/// Unintelligible turns before the agent gives up.
const MAX_UNCLEAR: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Voicemail,
    OptOut,
    Person,
    WrongNumber,
    Reschedule,
    NotInterested,
    Who,
    Confirm,
    Bye,
    Unclear,
}

/// Conversation state.
#[derive(Debug, Clone, Default)]
pub(super) struct Brain {
    silences: u8,
    unclear: u8,
    /// The ending the agent has decided on; a later turn gets this again rather than a new
    /// conversation (the callee talking over a goodbye does not reopen the call).
    closing: Option<Plan>,
    /// The closing plan's data tool calls went out, so repeating it must not repeat them.
    closing_calls_sent: bool,
    ended: bool,
}

impl Brain {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn is_ended(&self) -> bool {
        self.ended
    }

    /// An ending reply was spoken to its end.
    pub(super) fn end(&mut self) {
        self.ended = true;
    }

    /// The tool calls of a reply went out.
    pub(super) fn calls_sent(&mut self) {
        if self.closing.is_some() {
            self.closing_calls_sent = true;
        }
    }

    /// React to a final user transcript.
    pub(super) fn hear(&mut self, text: &str, tools: &[Value]) -> Option<Plan> {
        if self.ended {
            return None;
        }
        self.silences = 0;
        if let Some(again) = self.repeat_closing() {
            return Some(again);
        }
        let said = Normalized::new(text);
        let intent = said.intent();
        if intent != Intent::Unclear {
            self.unclear = 0;
        }
        Some(match intent {
            Intent::Voicemail => self.closing(
                tools,
                Vec::new(),
                Some(("voicemail", "Reached voicemail; left a message.")),
                "Hello, this is an automated assistant calling on behalf of our office about your upcoming appointment. Please call us back at your convenience. Thank you, goodbye.",
                None,
            ),
            Intent::OptOut => {
                let mut calls = Vec::new();
                let declared = find_tool(tools, OPT_OUT).is_some();
                if let Some(tool) = find_tool(tools, OPT_OUT) {
                    calls.push((OPT_OUT.to_string(), fill_required(tool, Map::new())));
                }
                let goodbye = if declared {
                    "I've removed your number. Sorry to bother you. Goodbye."
                } else {
                    "I'm sorry to have bothered you. I'll make a note not to call again. Goodbye."
                };
                self.closing(
                    tools,
                    calls,
                    Some(("opt_out", "Asked not to be called again.")),
                    goodbye,
                    Some(
                        "I'm sorry, I couldn't remove your number just now, but I've noted your request. Goodbye.",
                    ),
                )
            }
            Intent::Person => {
                if let Some(tool) = find_tool(tools, TRANSFER_CALL) {
                    let mut args = Map::new();
                    args.insert("reason".into(), json!("the caller asked for a person"));
                    let plan = Plan {
                        speech: None,
                        calls: vec![(TRANSFER_CALL.to_string(), fill_required(tool, args))],
                        then: Some(Box::new(Plan::say(HAND_OFF_LINE))),
                        on_error: Some(Box::new(Plan::say(
                            "I'm sorry, I can't connect you right now. Can I help you with your appointment instead?",
                        ))),
                        ends: false,
                    };
                    self.closing = Some(plan.clone());
                    self.closing_calls_sent = false;
                    plan
                } else {
                    self.closing(
                        tools,
                        Vec::new(),
                        None,
                        "I'm sorry, there's nobody available to take your call right now. Someone from our office will call you back. Goodbye.",
                        None,
                    )
                }
            }
            Intent::WrongNumber => self.closing(
                tools,
                Vec::new(),
                Some(("wrong_number", "Callee says this is the wrong number.")),
                "I'm sorry about that. I'll update our records. Goodbye.",
                None,
            ),
            Intent::Reschedule => self.closing(
                tools,
                Vec::new(),
                Some(("reschedule", "Cannot make it; wants another day.")),
                "No problem. Someone from our office will call you to find a better time. Goodbye!",
                None,
            ),
            Intent::NotInterested => self.closing(
                tools,
                Vec::new(),
                Some(("not_interested", "Declined.")),
                "Understood. Thank you for your time. Goodbye.",
                None,
            ),
            Intent::Who => Plan::say(
                "This is an automated reminder from our office about your upcoming appointment. Does that time still work for you?",
            ),
            Intent::Confirm => self.closing(
                tools,
                Vec::new(),
                Some(("confirmed", "Confirmed the appointment.")),
                "Great, you're all set. Thank you, and have a nice day. Goodbye!",
                None,
            ),
            Intent::Bye => self.closing(tools, Vec::new(), None, "Thank you. Goodbye!", None),
            Intent::Unclear => {
                self.unclear += 1;
                if self.unclear >= MAX_UNCLEAR {
                    self.closing(
                        tools,
                        Vec::new(),
                        None,
                        "Sorry, I'm having trouble hearing you. We'll try again another time. Goodbye.",
                        None,
                    )
                } else {
                    Plan::say(
                        "Sorry, I didn't catch that. Does your appointment time still work for you?",
                    )
                }
            }
        })
    }

    /// The callee said nothing for a long while after the agent finished speaking.
    pub(super) fn silence(&mut self, tools: &[Value]) -> Option<Plan> {
        if self.ended {
            return None;
        }
        if let Some(again) = self.repeat_closing() {
            return Some(again);
        }
        self.silences += 1;
        if self.silences < MAX_SILENCES {
            return Some(Plan::say("Are you still there?"));
        }
        Some(self.closing(
            tools,
            Vec::new(),
            Some(("no_response", "No response from the callee.")),
            "It seems this isn't a good time. I'll let you go. Goodbye.",
            None,
        ))
    }

    /// The client asked for a reply now (`reply.create`). Instructions are free text a real
    /// model would follow; the fake follows the ones it understands as a model would: a
    /// message it is told to say word for word is said, and keys the person pressed are
    /// taken as their answer (1 yes, 2 another time). Anything else gets a neutral holding
    /// line.
    pub(super) fn reply_create(&mut self, instructions: Option<&str>, tools: &[Value]) -> Plan {
        let text = instructions.unwrap_or_default();
        if let Some(message) = crate::call::voicemail::message_in(text) {
            // Said once, and nothing else: the client ends the call after it.
            self.ended = true;
            return Plan::say(message);
        }
        if let Some((_, keys)) = text.split_once("keypad: ") {
            let keys: String = keys
                .chars()
                .take_while(|c| *c != '.')
                .filter(|c| !c.is_whitespace())
                .collect();
            let heard = match keys.as_str() {
                "1" => "yes",
                "2" => "I need another day, reschedule please",
                _ => "",
            };
            if let Some(plan) = self.hear(heard, tools) {
                return plan;
            }
        }
        Plan::say("One moment, please.")
    }

    fn repeat_closing(&self) -> Option<Plan> {
        let plan = self.closing.clone()?;
        if self.closing_calls_sent && plan.awaits_results() {
            return plan.then.map(|p| *p);
        }
        Some(plan)
    }

    /// An ending: a silent pre-amble carrying the data tool calls (extra calls plus the
    /// disposition, when declared), then the goodbye with `end_call`; or just the goodbye when
    /// there is nothing to record.
    fn closing(
        &mut self,
        tools: &[Value],
        mut calls: Vec<(String, Value)>,
        disposition: Option<(&str, &str)>,
        goodbye: &str,
        on_error: Option<&str>,
    ) -> Plan {
        if let Some((value, notes)) = disposition
            && let Some(args) = record_outcome_args(tools, value, notes)
        {
            calls.push((RECORD_OUTCOME.to_string(), args));
        }
        let farewell = |text: &str| {
            let mut p = Plan::say(text);
            if find_tool(tools, END_CALL).is_some() {
                p.calls.push((END_CALL.to_string(), json!({})));
            }
            p.ends = true;
            p
        };
        let plan = if calls.is_empty() {
            farewell(goodbye)
        } else {
            Plan {
                speech: None,
                calls,
                then: Some(Box::new(farewell(goodbye))),
                on_error: on_error.map(|t| Box::new(farewell(t))),
                ends: false,
            }
        };
        self.closing = Some(plan.clone());
        self.closing_calls_sent = false;
        plan
    }
}

/// Whether a final transcript is only a back-channel, which does not take the turn.
pub(super) fn is_backchannel(text: &str) -> bool {
    const FILLERS: &[&str] = &[
        "uh huh", "mm hmm", "mhm", "hmm", "mm", "uh", "um", "right", "i see", "ah", "oh",
    ];
    let n = Normalized::new(text);
    FILLERS.contains(&n.0.trim())
}

fn find_tool<'a>(tools: &'a [Value], name: &str) -> Option<&'a Value> {
    tools.iter().find(|t| t["name"] == name)
}

/// Lower-case words separated by single spaces, padded with spaces for phrase matching.
struct Normalized(String);

impl Normalized {
    fn new(text: &str) -> Self {
        let mut out = String::from(" ");
        for c in text.chars() {
            let c = if c == '\u{2019}' { '\'' } else { c };
            if c.is_alphanumeric() || c == '\'' {
                out.extend(c.to_lowercase());
            } else if !out.ends_with(' ') {
                out.push(' ');
            }
        }
        if !out.ends_with(' ') {
            out.push(' ');
        }
        Self(out)
    }

    fn has_any(&self, phrases: &[&str]) -> bool {
        phrases.iter().any(|p| self.0.contains(&format!(" {p} ")))
    }

    fn intent(&self) -> Intent {
        // Order matters: an answering machine's greeting or an opt-out outranks any "yes".
        if self.has_any(&[
            "leave a message",
            "leave your message",
            "leave me a message",
            "voicemail",
            "voice mail",
            "after the tone",
            "after the beep",
            "at the tone",
            "can't take your call",
            "cannot take your call",
            "not available to take your call",
            "record your message",
            "mailbox",
        ]) {
            Intent::Voicemail
        } else if self.has_any(&[
            "take me off",
            "do not call",
            "don't call",
            "stop calling",
            "remove",
            "remove me",
            "unsubscribe",
            "opt out",
            "no more calls",
        ]) {
            Intent::OptOut
        } else if self.has_any(&[
            "real person",
            "a person",
            "a human",
            "human being",
            "speak to someone",
            "talk to someone",
            "representative",
            "operator",
            "an agent",
        ]) {
            Intent::Person
        } else if self.has_any(&[
            "wrong number",
            "wrong person",
            "nobody here by that name",
            "no one here by that name",
        ]) {
            Intent::WrongNumber
        } else if self.has_any(&[
            "reschedule",
            "can't make it",
            "cannot make it",
            "can not make it",
            "won't make it",
            "another day",
            "another time",
            "different day",
            "different time",
        ]) {
            Intent::Reschedule
        } else if self.has_any(&["not interested", "no thanks", "no thank you", "not for me"]) {
            Intent::NotInterested
        } else if self.has_any(&[
            "who is this",
            "who's this",
            "who are you",
            "who is calling",
            "who's calling",
            "what is this about",
            "what's this about",
            "what is this regarding",
            "what is this",
        ]) {
            Intent::Who
        } else if self.has_any(&[
            "yes",
            "yeah",
            "yep",
            "yup",
            "sure",
            "ok",
            "okay",
            "works",
            "i'll be there",
            "i will be there",
            "sounds good",
            "confirm",
            "confirmed",
            "correct",
            "absolutely",
            "of course",
            "fine",
        ]) {
            Intent::Confirm
        } else if self.has_any(&["bye", "goodbye", "good bye", "bye bye", "talk to you later"]) {
            Intent::Bye
        } else {
            Intent::Unclear
        }
    }
}

/// Names a disposition may go by in a client's enum, best first; then word stems.
fn disposition_aliases(canonical: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match canonical {
        "confirmed" => (
            &[
                "confirmed",
                "confirm",
                "appointment_confirmed",
                "agreed",
                "accepted",
                "yes",
                "success",
            ],
            &["confirm", "agree", "accept"],
        ),
        "reschedule" => (
            &[
                "reschedule",
                "rescheduled",
                "reschedule_requested",
                "needs_reschedule",
                "callback",
                "call_back",
                "callback_requested",
            ],
            &["reschedul", "callback", "call_back"],
        ),
        "wrong_number" => (
            &["wrong_number", "wrong_person", "invalid_number"],
            &["wrong"],
        ),
        "not_interested" => (
            &["not_interested", "declined", "refused", "no"],
            &["not_interested", "declin", "refus"],
        ),
        "voicemail" => (
            &[
                "voicemail",
                "left_voicemail",
                "left_message",
                "answering_machine",
                "machine",
            ],
            &["voicemail", "voice_mail", "message", "machine"],
        ),
        "opt_out" => (
            &[
                "opt_out",
                "opted_out",
                "do_not_call",
                "dnc",
                "unsubscribe",
                "remove",
            ],
            &["opt_out", "optout", "opted_out", "do_not_call", "dnc"],
        ),
        "no_response" => (
            &[
                "no_response",
                "no_answer",
                "unresponsive",
                "silent",
                "silence",
            ],
            &["no_response", "no_answer", "unresponsive", "silen"],
        ),
        _ => (&[], &[]),
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The enum value that best names `canonical`, if any.
pub fn match_disposition<'a>(allowed: &'a [Value], canonical: &str) -> Option<&'a str> {
    let values: Vec<(&str, String)> = allowed
        .iter()
        .filter_map(Value::as_str)
        .map(|v| (v, slug(v)))
        .collect();
    let (exact, stems) = disposition_aliases(canonical);
    for alias in exact {
        if let Some((v, _)) = values.iter().find(|(_, s)| s == alias) {
            return Some(v);
        }
    }
    let negative = canonical.contains("not") || canonical.starts_with("no_");
    for stem in stems {
        let found = values.iter().find(|(_, s)| {
            s.contains(stem)
                && (negative
                    || !(s.contains("not_") || s.starts_with("un") || s.starts_with("non")))
        });
        if let Some((v, _)) = found {
            return Some(v);
        }
    }
    None
}

/// Arguments for `record_outcome`, when it is declared with a `disposition` property and a
/// value for this outcome exists.
fn record_outcome_args(tools: &[Value], canonical: &str, notes: &str) -> Option<Value> {
    let tool = find_tool(tools, RECORD_OUTCOME)?;
    let props = tool["parameters"]["properties"].as_object()?;
    let disposition = props.get("disposition")?;
    let value = match disposition.get("enum").and_then(Value::as_array) {
        Some(allowed) => match_disposition(allowed, canonical)?.to_string(),
        None => canonical.to_string(),
    };
    let mut args = Map::new();
    args.insert("disposition".into(), json!(value));
    if props.contains_key("notes") {
        args.insert("notes".into(), json!(notes));
    }
    Some(fill_required(tool, args))
}

/// Give every required parameter a value of its declared type, so a call is schema-valid.
fn fill_required(tool: &Value, mut args: Map<String, Value>) -> Value {
    let params = &tool["parameters"];
    let required = params["required"].as_array().cloned().unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        if args.contains_key(name) {
            continue;
        }
        let schema = &params["properties"][name];
        let value = if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
            first.clone()
        } else {
            match schema["type"].as_str() {
                Some("boolean") => json!(true),
                Some("integer" | "number") => json!(0),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!("requested by the callee"),
            }
        };
        args.insert(name.to_string(), value);
    }
    Value::Object(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type":"function","name":"end_call","parameters":{"type":"object","properties":{}}}),
            json!({"type":"function","name":"opt_out","parameters":{"type":"object","properties":{}}}),
            json!({"type":"function","name":"record_outcome","parameters":{"type":"object",
                "properties":{"disposition":{"type":"string","enum":["confirmed","reschedule","wrong_number","not_interested","left_voicemail","opted_out"]},"notes":{"type":"string"}},
                "required":["disposition"]}}),
        ]
    }

    fn intent(text: &str) -> Intent {
        Normalized::new(text).intent()
    }

    #[test]
    fn persona_lines_map_to_intents() {
        assert_eq!(
            intent("Yes, that works for me. I'll be there."),
            Intent::Confirm
        );
        assert_eq!(intent("Thanks, bye."), Intent::Bye);
        assert_eq!(
            intent(
                "Hi, you've reached Sam. I can't take your call right now. Please leave a message after the tone. beep"
            ),
            Intent::Voicemail
        );
        assert_eq!(
            intent("Please take me off your list and do not call me again."),
            Intent::OptOut
        );
        assert_eq!(
            intent("Sorry, who is this? What is this about?"),
            Intent::Who
        );
        assert_eq!(intent("Oh right. Yes, I’ll be there."), Intent::Confirm);
        assert_eq!(
            intent("I can't make it then. Can we reschedule to another day?"),
            Intent::Reschedule
        );
        assert_eq!(
            intent("I think you have the wrong number. There's nobody here by that name."),
            Intent::WrongNumber
        );
        assert_eq!(
            intent("No thanks, I'm not interested."),
            Intent::NotInterested
        );
        assert_eq!(
            intent("Can I speak to a real person, please?"),
            Intent::Person
        );
        assert_eq!(intent("I took the bus"), Intent::Unclear);
        assert_eq!(intent(""), Intent::Unclear);
    }

    #[test]
    fn dispositions_stay_inside_the_enum() {
        let e = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
        assert_eq!(
            match_disposition(&e(&["left_voicemail"]), "voicemail"),
            Some("left_voicemail")
        );
        assert_eq!(
            match_disposition(&e(&["OPTED-OUT"]), "opt_out"),
            Some("OPTED-OUT")
        );
        assert_eq!(
            match_disposition(&e(&["not_confirmed", "appointment_confirmed"]), "confirmed"),
            Some("appointment_confirmed")
        );
        assert_eq!(
            match_disposition(&e(&["not_interested"]), "confirmed"),
            None
        );
        assert_eq!(match_disposition(&e(&["busy"]), "voicemail"), None);
    }

    #[test]
    fn confirmation_records_then_ends() {
        let mut b = Brain::new();
        let p = b.hear("Yes, that works for me", &tools()).unwrap();
        assert_eq!(p.speech, None);
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.calls[0].0, "record_outcome");
        assert_eq!(p.calls[0].1["disposition"], "confirmed");
        let then = p.then.unwrap();
        assert!(then.ends);
        assert_eq!(then.calls, vec![("end_call".to_string(), json!({}))]);
        // Talking over the goodbye gets the goodbye again, without re-recording.
        b.calls_sent();
        let again = b.hear("what?", &tools()).unwrap();
        assert!(again.calls.iter().all(|(n, _)| n == "end_call"));
    }

    #[test]
    fn opt_out_calls_both_tools() {
        let mut b = Brain::new();
        let p = b.hear("stop calling me", &tools()).unwrap();
        let names: Vec<_> = p.calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["opt_out", "record_outcome"]);
        assert_eq!(p.calls[1].1["disposition"], "opted_out");
        assert!(p.on_error.is_some());
    }

    #[test]
    fn no_tools_means_just_words() {
        let mut b = Brain::new();
        let p = b.hear("wrong number", &[]).unwrap();
        assert!(p.calls.is_empty() && p.ends && p.speech.is_some());
    }

    #[test]
    fn reply_create_instructions_are_followed() {
        let mut b = Brain::new();
        let said = b.reply_create(
            Some(&crate::call::voicemail::instructions(
                "Please call us back.",
            )),
            &tools(),
        );
        assert_eq!(said.speech.as_deref(), Some("Please call us back."));
        assert!(said.calls.is_empty(), "only the message");
        let mut b = Brain::new();
        let keys = b.reply_create(Some(&crate::call::keypad::instructions("1")), &tools());
        assert_eq!(keys.calls[0].1["disposition"], "confirmed");
        let mut b = Brain::new();
        assert_eq!(
            b.reply_create(Some("Say something nice"), &tools())
                .speech
                .as_deref(),
            Some("One moment, please.")
        );
    }

    #[test]
    fn a_caller_who_asks_for_a_person_is_transferred_when_the_tool_is_offered() {
        let mut with = tools();
        with.push(json!({"type":"function","name":"transfer_call","parameters":{"type":"object","properties":{"reason":{"type":"string"}},"required":["reason"]}}));
        let p = Brain::new()
            .hear("Can I talk to a real person?", &with)
            .unwrap();
        assert_eq!(p.calls[0].0, "transfer_call");
        assert_eq!(p.then.unwrap().speech.as_deref(), Some(HAND_OFF_LINE));
        let p = Brain::new()
            .hear("Can I talk to a real person?", &tools())
            .unwrap();
        assert!(p.ends && p.calls.iter().all(|(n, _)| n == "end_call"));
    }

    #[test]
    fn silence_prompts_then_gives_up() {
        let mut b = Brain::new();
        assert_eq!(
            b.silence(&[]).unwrap().speech.as_deref(),
            Some("Are you still there?")
        );
        assert!(b.silence(&[]).unwrap().ends);
    }
}
