//! Twilio's words for where a call stands (`CallStatus` / `status`) and who answered it
//! (`AnsweredBy` / `answered_by`), parsed once where they arrive: the status callback form and
//! the Call resource JSON. Values Twilio adds later are kept as `Other` with their text, so
//! everything that stores or prints them writes exactly what Twilio sent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A call's status, as status callbacks and the Call resource report it (twilio.md §1.5, §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallStatus {
    Queued,
    /// Callbacks only: Twilio has started dialing.
    Initiated,
    Ringing,
    /// Answered.
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
    Other(String),
}

impl CallStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Other(s) => s,
        }
    }

    /// How the call ended, or `None` while it is still live (or the status is one we do not
    /// know, which we must not mistake for an end).
    pub fn final_status(&self) -> Option<FinalStatus> {
        Some(match self {
            Self::Completed => FinalStatus::Completed,
            Self::Busy => FinalStatus::Busy,
            Self::NoAnswer => FinalStatus::NoAnswer,
            Self::Failed => FinalStatus::Failed,
            Self::Canceled => FinalStatus::Canceled,
            Self::Queued | Self::Initiated | Self::Ringing | Self::InProgress | Self::Other(_) => {
                return None;
            }
        })
    }

    pub fn is_final(&self) -> bool {
        self.final_status().is_some()
    }
}

impl From<&str> for CallStatus {
    fn from(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "initiated" => Self::Initiated,
            "ringing" => Self::Ringing,
            "in-progress" => Self::InProgress,
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "no-answer" => Self::NoAnswer,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<String> for CallStatus {
    fn from(s: String) -> Self {
        match Self::from(s.as_str()) {
            Self::Other(_) => Self::Other(s),
            known => known,
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// How a call ended: the final subset of [`CallStatus`], which every outcome has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalStatus {
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for FinalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answering-machine detection's verdict (twilio.md §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AnsweredBy {
    Human,
    /// `MachineDetection=Enable`: a machine, as soon as it is known.
    MachineStart,
    /// `MachineDetection=DetectMessageEnd`: a machine, at the end of its greeting.
    MachineEndBeep,
    MachineEndSilence,
    MachineEndOther,
    Fax,
    /// Detection could not tell in time.
    Unknown,
    Other(String),
}

impl AnsweredBy {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Human => "human",
            Self::MachineStart => "machine_start",
            Self::MachineEndBeep => "machine_end_beep",
            Self::MachineEndSilence => "machine_end_silence",
            Self::MachineEndOther => "machine_end_other",
            Self::Fax => "fax",
            Self::Unknown => "unknown",
            Self::Other(s) => s,
        }
    }

    /// Whether a machine, not a person, picked up. A verdict Twilio adds later counts as a
    /// machine when it is named like the others (`machine_…`).
    pub fn is_machine(&self) -> bool {
        match self {
            Self::MachineStart
            | Self::MachineEndBeep
            | Self::MachineEndSilence
            | Self::MachineEndOther
            | Self::Fax => true,
            Self::Human | Self::Unknown => false,
            Self::Other(s) => s.starts_with("machine"),
        }
    }
}

impl From<&str> for AnsweredBy {
    fn from(s: &str) -> Self {
        match s {
            "human" => Self::Human,
            "machine_start" => Self::MachineStart,
            "machine_end_beep" => Self::MachineEndBeep,
            "machine_end_silence" => Self::MachineEndSilence,
            "machine_end_other" => Self::MachineEndOther,
            "fax" => Self::Fax,
            "unknown" => Self::Unknown,
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<String> for AnsweredBy {
    fn from(s: String) -> Self {
        match Self::from(s.as_str()) {
            Self::Other(_) => Self::Other(s),
            known => known,
        }
    }
}

impl fmt::Display for AnsweredBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AnsweredBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AnsweredBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// Every documented `CallStatus` value, for tests.
#[cfg(test)]
pub(crate) const STATUSES: [&str; 9] = [
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// Every documented `AnsweredBy` value, for tests.
#[cfg(test)]
pub(crate) const VERDICTS: [&str; 7] = [
    "human",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "fax",
    "unknown",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_is_known_and_round_trips() {
        for text in STATUSES {
            let status = CallStatus::from(text);
            assert!(!matches!(status, CallStatus::Other(_)), "{text}");
            assert_eq!(status.as_str(), text);
            assert_eq!(status.to_string(), text);
            assert_eq!(CallStatus::from(text.to_string()), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<CallStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn only_the_five_ends_are_final() {
        let finals: Vec<(&str, &str)> = STATUSES
            .iter()
            .filter_map(|s| {
                CallStatus::from(*s)
                    .final_status()
                    .map(|f| (*s, f.as_str()))
            })
            .collect();
        assert_eq!(
            finals,
            vec![
                ("completed", "completed"),
                ("busy", "busy"),
                ("no-answer", "no-answer"),
                ("failed", "failed"),
                ("canceled", "canceled"),
            ]
        );
        for (text, _) in finals {
            assert!(CallStatus::from(text).is_final());
        }
        assert!(!CallStatus::InProgress.is_final());
    }

    #[test]
    fn a_status_twilio_adds_later_keeps_its_text_and_is_not_an_end() {
        for text in ["held", "In-Progress", ""] {
            let status = CallStatus::from(text);
            assert_eq!(status, CallStatus::Other(text.into()));
            assert_eq!(status.as_str(), text);
            assert!(!status.is_final());
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(serde_json::from_str::<CallStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn final_status_serialises_as_twilio_writes_it() {
        for f in [
            FinalStatus::Completed,
            FinalStatus::Busy,
            FinalStatus::NoAnswer,
            FinalStatus::Failed,
            FinalStatus::Canceled,
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
            assert_eq!(CallStatus::from(f.as_str()).final_status(), Some(f));
        }
    }

    #[test]
    fn every_documented_verdict_is_known_and_round_trips() {
        for text in VERDICTS {
            let verdict = AnsweredBy::from(text);
            assert!(!matches!(verdict, AnsweredBy::Other(_)), "{text}");
            assert_eq!(verdict.as_str(), text);
            assert_eq!(verdict.to_string(), text);
            assert_eq!(AnsweredBy::from(text.to_string()), verdict);
            let json = serde_json::to_string(&verdict).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<AnsweredBy>(&json).unwrap(), verdict);
        }
        let other = AnsweredBy::from("robot");
        assert_eq!(other, AnsweredBy::Other("robot".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"robot\"");
    }

    /// Texts near the documented ones: other cases, padding, prefixes, and anything else.
    fn near(rng: &mut rand::rngs::StdRng, documented: &[&str]) -> String {
        use crate::props;
        use rand::Rng;
        let word = documented[rng.random_range(0..documented.len())];
        if rng.random_bool(0.01) {
            return props::long_text(rng);
        }
        match rng.random_range(0..5) {
            0 => word.to_string(),
            1 => word.to_ascii_uppercase(),
            2 => format!(" {word}"),
            3 => format!("{word}{}", props::random_text(rng, &["_", "-", "\0"], 2)),
            _ => props::random_text(rng, documented, 4),
        }
    }

    /// Whatever Twilio sends as `CallStatus` or `status`, it reads as the documented status
    /// with that exact text, or as `Other` keeping the text, which is never an end; and it
    /// writes back out as it came.
    #[test]
    fn any_text_is_a_status_or_kept_as_other() {
        crate::props::check(
            41,
            crate::props::cases(),
            |rng| near(rng, &STATUSES),
            |text| {
                let status = CallStatus::from(text.as_str());
                assert_eq!(CallStatus::from(text.clone()), status);
                assert_eq!(status.as_str(), text);
                assert_eq!(status.to_string(), *text);
                if STATUSES.contains(&text.as_str()) {
                    assert!(!matches!(status, CallStatus::Other(_)));
                } else {
                    assert_eq!(status, CallStatus::Other(text.clone()));
                    assert!(!status.is_final());
                }
                let json = serde_json::to_string(&status).unwrap();
                assert_eq!(serde_json::from_str::<CallStatus>(&json).unwrap(), status);
            },
        );
    }

    /// The same for `AnsweredBy`; a verdict is a machine only when documented as one or named
    /// like one (`machine…`).
    #[test]
    fn any_text_is_a_verdict_or_kept_as_other() {
        crate::props::check(
            42,
            crate::props::cases(),
            |rng| near(rng, &VERDICTS),
            |text| {
                let verdict = AnsweredBy::from(text.as_str());
                assert_eq!(AnsweredBy::from(text.clone()), verdict);
                assert_eq!(verdict.as_str(), text);
                assert_eq!(verdict.to_string(), *text);
                if VERDICTS.contains(&text.as_str()) {
                    assert!(!matches!(verdict, AnsweredBy::Other(_)));
                } else {
                    assert_eq!(verdict, AnsweredBy::Other(text.clone()));
                    assert_eq!(verdict.is_machine(), text.starts_with("machine"));
                }
                let json = serde_json::to_string(&verdict).unwrap();
                assert_eq!(serde_json::from_str::<AnsweredBy>(&json).unwrap(), verdict);
            },
        );
    }

    /// In the Call resource JSON, a status or verdict that is not a string is refused, not a
    /// panic.
    #[test]
    fn a_status_that_is_not_a_string_is_refused() {
        for json in [
            "null",
            "1",
            "-1",
            "1e400",
            "true",
            "[]",
            "{}",
            "[\"busy\"]",
            "\"\\ud800\"",
        ] {
            assert!(serde_json::from_str::<CallStatus>(json).is_err(), "{json}");
            assert!(serde_json::from_str::<AnsweredBy>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn machines_and_faxes_are_machines() {
        let machines: Vec<&str> = VERDICTS
            .into_iter()
            .filter(|v| AnsweredBy::from(*v).is_machine())
            .collect();
        assert_eq!(
            machines,
            vec![
                "machine_start",
                "machine_end_beep",
                "machine_end_silence",
                "machine_end_other",
                "fax"
            ]
        );
        assert!(AnsweredBy::from("machine_end_unsure").is_machine());
        assert!(!AnsweredBy::from("robot").is_machine());
    }
}
