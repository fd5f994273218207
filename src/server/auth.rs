//! Who may use the call API and how often: `Authorization: Bearer <DIALER_API_KEY>`, compared
//! in constant time, and a token bucket per key.

use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Whether an `Authorization` header carries `key`. Both sides are hashed first so that the
/// comparison takes the same time whatever the presented value's length.
pub(super) fn is_authorized(header: Option<&str>, key: &Secret) -> bool {
    let Some(presented) = header.and_then(bearer) else {
        return false;
    };
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(key.expose().as_bytes());
    bool::from(a.ct_eq(&b))
}

/// The token of a `Bearer` header (the scheme is case-insensitive, RFC 7235).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A token bucket per key: `per_minute` requests a minute, and bursts of as many.
pub(super) struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(super) fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `who` (the presented key; hashed, never kept); `Err` says how long
    /// until the next one is allowed.
    pub(super) fn take(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let id: [u8; 32] = Sha256::digest(who.as_bytes()).into();
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(id).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_as_a_bearer_token_is_authorized() {
        let key = Secret::new("s3cret-key");
        assert!(is_authorized(Some("Bearer s3cret-key"), &key));
        assert!(is_authorized(Some("bearer   s3cret-key "), &key));
        for wrong in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("s3cret-key"),
            Some("Basic s3cret-key"),
            Some("Bearer s3cret-ke"),
            Some("Bearer s3cret-key2"),
            Some("Bearer S3CRET-KEY"),
        ] {
            assert!(!is_authorized(wrong, &key), "{wrong:?}");
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.take("k", t0).is_ok());
        }
        let wait = limiter.take("k", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert!(limiter.take("other", t0).is_ok());
        // One token a second comes back, and no more than the burst accumulates.
        assert!(limiter.take("k", t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.take("k", t0 + Duration::from_secs(1)).is_err());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..60 {
            assert!(limiter.take("k", later).is_ok());
        }
        assert!(limiter.take("k", later).is_err());
    }
}
