//! Placeholder so the tree compiles while the fake Voice Agent is written.
