//! Twilio: the Calls REST API client, TwiML, Media Streams messages and request signatures.

pub mod signature;
