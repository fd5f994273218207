//! Placeholder so the tree compiles while campaigns are written.
