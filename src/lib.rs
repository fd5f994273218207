//! dialer library root.
