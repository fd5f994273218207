//! Recording a call, both ways `--record` asks for:
//!
//! - [`callbacks`]: Twilio's own recording (`Record=true`, dual channel). Its status callbacks
//!   reach the server under a recording token of their own, which outlives the call's token,
//!   because Twilio sends `completed` only after the call is over.
//! - [`playout`], [`wav`], [`recorder`]: a stereo WAV written on this machine, callee left and
//!   agent right, each sample where the callee heard it. The bridge hands the recorder the
//!   frames it forwards (no copy, no wait); a writer task does the rest off the hot path.

pub mod callbacks;
pub mod playout;
pub mod recorder;
pub mod wav;

/// Where a call's local recording goes: `<dir>/<CallSid>.wav`.
pub fn wav_path(dir: &std::path::Path, call_sid: &str) -> Option<std::path::PathBuf> {
    // Twilio's SIDs are letters and digits; never trust a name that becomes a path.
    (!call_sid.is_empty() && call_sid.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| dir.join(format!("{call_sid}.wav")))
}
