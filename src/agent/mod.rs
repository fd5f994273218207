//! The AssemblyAI Voice Agent API: configuration, wire protocol, and the WebSocket client.

pub mod client;
pub mod config;
pub mod protocol;
