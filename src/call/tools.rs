//! Tools the agent may call during a call, beyond the built-in `end_call` (which the bridge
//! owns because it controls the phone line). Whoever places the call (a campaign, say) supplies
//! a [`ToolHandler`] with its own tools.

use crate::events::Disposition;
use serde_json::Value;

// What a handler declares is exactly what the agent is sent, so the type is the protocol's.
pub use crate::agent::protocol::ToolSpec;

/// What a tool returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolReply {
    /// Sent to the agent as `tool.result.result` (serialised to a JSON string).
    pub result: Value,
    pub is_error: bool,
    /// Set by a tool that recorded the call's disposition.
    pub disposition: Option<Disposition>,
    /// Set by a tool that put the callee on the do-not-call list.
    pub opted_out: bool,
    /// Set by a tool whose outcome requires a person: the call is transferred (when the call
    /// has somewhere to transfer to), for this reason.
    pub transfer: Option<String>,
}

impl ToolReply {
    pub fn ok(result: Value) -> Self {
        Self {
            result,
            ..Self::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            result: serde_json::json!({ "error": message.into() }),
            is_error: true,
            ..Self::default()
        }
    }
}

/// Runs the caller's tools. `call` must be quick: it runs on the call's task.
pub trait ToolHandler: Send + Sync {
    fn specs(&self) -> Vec<ToolSpec>;
    /// `None` when the tool is not one of this handler's.
    fn call(&self, name: &str, arguments: &Value) -> Option<ToolReply>;
    /// The disposition keys the callee pressed stand for (a campaign's `[dtmf]` table), if
    /// any. Quick, like `call`.
    fn keypad(&self, _keys: &str) -> Option<Disposition> {
        None
    }
    /// What a `dialer serve` needs to offer these tools on a call it places for us
    /// (`--server`); `None`: none to offer.
    fn remote(&self) -> Option<RemoteTools> {
        None
    }
}

/// A campaign's tools as data, for a server that runs them on our behalf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTools {
    pub dispositions: Vec<String>,
    pub opt_out: bool,
    /// `[dtmf]`: keys to dispositions.
    pub keys: Vec<(String, String)>,
    /// `[transfer] on`: dispositions that hand the call to a person.
    pub transfer_on: Vec<String>,
}

/// No tools beyond `end_call`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTools;

impl ToolHandler for NoTools {
    fn specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }
    fn call(&self, _: &str, _: &Value) -> Option<ToolReply> {
        None
    }
}
