//! Twilio REST errors, turned into what a user can act on. We branch on the numeric code, never
//! on message text (Twilio refines messages over time).

use serde::Deserialize;

/// The legacy 2010-04-01 error body: `{"code":21211,"message":"…","more_info":"…","status":400}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiErrorBody {
    pub code: Option<u32>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub more_info: Option<String>,
    pub status: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error.
    #[error("{}", api_message(*status, *code, message))]
    Api {
        status: u16,
        code: Option<u32>,
        message: String,
    },
    /// Twilio could not be reached, or did not answer in time.
    #[error("cannot reach the Twilio API at {base}: {source}")]
    Transport {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// Twilio answered with something that is not what the API documents.
    #[error("unexpected answer from the Twilio API (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },
}

/// Codes that say the account or settings are wrong, not the number: every call would fail.
const CONFIG_CODES: &[u32] = &[20003, 21210, 21212, 21219, 21205, 20005, 20008];

impl TwilioError {
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport { .. } => None,
        }
    }

    /// Whether the settings (credentials, caller ID, account type) are at fault.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => {
                *status == 401 || code.is_some_and(|c| CONFIG_CODES.contains(&c))
            }
            _ => false,
        }
    }

    /// Whether a hang-up failed only because there is no live call left to hang up: it ended
    /// on its own meanwhile (21220, not in progress) or Twilio no longer knows it (20404).
    pub fn is_call_already_over(&self) -> bool {
        matches!(
            self,
            Self::Api {
                code: Some(21220 | 20404),
                ..
            }
        )
    }

    /// Whether the same request may succeed later (rate limits, Twilio trouble, network).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => {
                *status == 429 || *status >= 500 || *code == Some(20429)
            }
            Self::Transport { .. } => true,
            // A success whose body cannot be read took effect all the same (a call was
            // created): it must never read as a refusal.
            Self::Decode { status, .. } => *status >= 500 || (200..300).contains(status),
        }
    }
}

fn api_message(status: u16, code: Option<u32>, message: &str) -> String {
    let advice = match code {
        Some(20003) => {
            "Twilio rejected the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or the API key and secret)"
        }
        Some(20404) => "Twilio does not know this resource (wrong account SID or call SID)",
        Some(20429) => "Twilio's rate limit was hit; slow down and try again",
        Some(21201) => "no 'To' number was given",
        Some(21210) => {
            "TWILIO_FROM_NUMBER is not a Twilio number of this account nor a verified caller ID; buy or verify it in the Twilio Console"
        }
        Some(21211) => "the 'To' number is not a valid phone number",
        Some(21212) => "TWILIO_FROM_NUMBER is not a valid phone number",
        Some(21214) => "the 'To' number cannot be reached",
        Some(21215) => {
            "Twilio's geographic permissions block calls to this country; enable it under Voice > Settings > Geo permissions in the Twilio Console"
        }
        Some(21216) => "Twilio blocks calls to this number",
        Some(21217) => "the 'To' number does not appear to be valid",
        Some(21219) => {
            "a trial Twilio account can only call verified numbers; verify this number in the Twilio Console or upgrade the account"
        }
        Some(21220) => "the call is no longer in progress",
        _ => "",
    };
    let code_part = code.map(|c| format!(" {c}")).unwrap_or_default();
    if advice.is_empty() {
        format!("Twilio error{code_part} (HTTP {status}): {message}")
    } else if message.is_empty() {
        format!("Twilio error{code_part}: {advice}")
    } else {
        format!("Twilio error{code_part}: {advice} (Twilio said: {message})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: u32) -> TwilioError {
        TwilioError::Api {
            status,
            code: Some(code),
            message: "m".into(),
        }
    }

    #[test]
    fn messages_name_the_fix() {
        assert!(api(401, 20003).to_string().contains("TWILIO_AUTH_TOKEN"));
        assert!(api(400, 21219).to_string().contains("verified numbers"));
        assert!(api(400, 21215).to_string().contains("Geo permissions"));
        assert!(api(400, 21210).to_string().contains("TWILIO_FROM_NUMBER"));
        assert!(
            api(400, 21211)
                .to_string()
                .contains("not a valid phone number")
        );
    }

    #[test]
    fn classification() {
        assert!(api(401, 20003).is_configuration());
        assert!(api(400, 21219).is_configuration());
        assert!(!api(400, 21211).is_configuration());
        assert!(api(429, 20429).is_transient());
        assert!(api(503, 0).is_transient());
        assert!(!api(400, 21211).is_transient());
        assert!(api(400, 21220).is_call_already_over());
        assert!(api(404, 20404).is_call_already_over());
        assert!(!api(400, 21211).is_call_already_over());
        assert!(!api(503, 0).is_call_already_over());
        let unreadable = |status| TwilioError::Decode {
            status,
            detail: "expected value at line 1".into(),
        };
        assert!(
            unreadable(201).is_transient(),
            "a 2xx took effect: never a refusal"
        );
        assert!(unreadable(502).is_transient());
        assert!(!unreadable(400).is_transient());
    }
}
