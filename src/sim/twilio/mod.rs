//! Placeholder so the tree compiles while the fake Twilio is written.
