//! The AssemblyAI Voice Agent API: configuration, wire protocol, and the WebSocket client.

pub(crate) mod client;
pub mod config;
pub(crate) mod protocol;
