//! Everything the fake sends to our server over HTTP — status callbacks, AMD callbacks, stream
//! status callbacks and TwiML fetches — signed with `X-Twilio-Signature` exactly as Twilio
//! signs: the URL requested plus, for POST, every form parameter.

use std::time::Duration;

use super::Shared;
use super::signing::sign;

/// A URL Twilio requests, with its method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hook {
    pub url: String,
    /// `GET` or `POST` (validated before a hook is built).
    pub method: String,
}

/// How long Twilio waits for a webhook; TwiML fetches are scaled with simulated time but never
/// below a floor, so a busy test machine does not fail them.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
const MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The request for `hook` with `params`: the URL actually requested (GET carries the params in
/// the query) and its signature.
fn prepare(shared: &Shared, hook: &Hook, params: &[(String, String)]) -> (String, String) {
    let token = &shared.config.auth_token;
    if hook.method == "GET" {
        let url = match url::Url::parse(&hook.url) {
            Ok(mut u) => {
                u.query_pairs_mut().extend_pairs(params);
                u.to_string()
            }
            Err(_) => hook.url.clone(),
        };
        let sig = sign(token, &url, &[]);
        (url, sig)
    } else {
        let sig = sign(token, &hook.url, params);
        (hook.url.clone(), sig)
    }
}

async fn request(
    shared: &Shared,
    hook: &Hook,
    params: &[(String, String)],
    timeout: Duration,
) -> reqwest::Result<reqwest::Response> {
    let (url, sig) = prepare(shared, hook, params);
    let builder = if hook.method == "GET" {
        shared.http.get(url)
    } else {
        shared.http.post(url).form(params)
    };
    builder
        .header("X-Twilio-Signature", sig)
        .header("Accept", "*/*")
        .timeout(timeout)
        .send()
        .await
}

/// Send a callback; returns the HTTP status our server answered, `None` if it did not.
pub(super) async fn send(shared: &Shared, hook: &Hook, params: &[(String, String)]) -> Option<u16> {
    match request(shared, hook, params, WEBHOOK_TIMEOUT).await {
        Ok(resp) => Some(resp.status().as_u16()),
        Err(e) => {
            // Callback URLs carry a call's token: neither the URL nor reqwest's error (which
            // names it) is logged whole.
            tracing::debug!(url = %shown(&hook.url), "webhook failed: {}", e.without_url());
            None
        }
    }
}

/// A callback URL fit for a log line: no query, and any path segment long enough to be a
/// token replaced by `…`.
fn shown(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "(unparsable URL)".into();
    };
    let path: Vec<&str> = parsed
        .path_segments()
        .into_iter()
        .flatten()
        .map(|seg| if seg.len() >= 16 { "…" } else { seg })
        .collect();
    format!(
        "{}/{}",
        parsed.origin().ascii_serialization(),
        path.join("/")
    )
}

/// Fetch a TwiML document. `Err` is the Twilio error code and message.
pub(super) async fn fetch_twiml(
    shared: &Shared,
    hook: &Hook,
    params: &[(String, String)],
) -> Result<String, (u32, String)> {
    let timeout = shared.scale().scale(WEBHOOK_TIMEOUT).max(MIN_TIMEOUT);
    let resp = request(shared, hook, params, timeout).await.map_err(|e| {
        if e.is_timeout() {
            (
                11205,
                format!("HTTP connection failure: timed out fetching {}", hook.url),
            )
        } else {
            (11200, format!("HTTP retrieval failure: {} ({e})", hook.url))
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err((
            11200,
            format!(
                "HTTP retrieval failure: {} answered {}",
                hook.url,
                status.as_u16()
            ),
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| (11200, format!("HTTP retrieval failure: {e}")))?;
    // Twilio refuses TwiML responses over 64 kB.
    if body.len() > 64 * 1024 {
        return Err((11750, "TwiML response body too large".into()));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| (12100, "Document parse failure: not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logged_callback_url_keeps_no_token() {
        let token = "0123456789abcdef0123456789abcdef";
        let shown = super::shown(&format!(
            "https://dialer.example.com/twilio/status/{token}?x={token}"
        ));
        assert_eq!(shown, "https://dialer.example.com/twilio/status/…");
    }
}
