//! One filter per route, and the handlers at their ends. Every Twilio route goes through
//! [`signed_form`] (or the signed handshake of [`media_stream`]), so no handler runs for a
//! request whose `X-Twilio-Signature` does not check out; refusals are rejections, turned into
//! responses in one place, [`recover`].

use super::{ServerState, convert};
use crate::call::registry::{CallSignal, IncomingStream, StatusUpdate};
use crate::twilio::media::{self, TwilioMessage};
use crate::twilio::signature;
use crate::webhooks::paths;
use crate::ws::{Frame, FrameSink, FrameStream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::convert::Infallible;
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// How long a new Media Stream may take to send `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio's webhooks are small forms; anything larger is not Twilio.
const MAX_FORM: u64 = 64 * 1024;
/// Largest Media Stream message or frame accepted.
const MAX_WS_MESSAGE: usize = 64 * 1024;

pub(super) fn routes(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    health()
        .or(status(state.clone()))
        .or(amd(state.clone()))
        .or(media_stream(state))
        .recover(recover)
        .with(warp::trace(|info| {
            tracing::info_span!("request", method = %info.method(), route = %route(info.path()))
        }))
}

/// A request's path for the logs: the segment after `/twilio/{kind}/` is a call's one-time
/// token, which must never reach a log.
fn route(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some(prefix), Some(kind), Some(_)) if prefix == paths::PREFIX => {
            format!("/{prefix}/{kind}/…")
        }
        _ => path.to_string(),
    }
}

/// Why a request was refused before any handler saw it.
#[derive(Debug)]
enum Refused {
    /// No `X-Twilio-Signature`, or one that does not match.
    Signature,
}

impl warp::reject::Reject for Refused {}

/// A Twilio form POST to `/twilio/{kind}/{token}` whose signature checked out.
struct SignedForm {
    token: String,
    params: Vec<(String, String)>,
}

impl SignedForm {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn with_state(
    state: ServerState,
) -> impl Filter<Extract = (ServerState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn signed_form(
    kind: &'static str,
    state: ServerState,
) -> impl Filter<Extract = (SignedForm, ServerState), Error = Rejection> + Clone {
    warp::post()
        .and(warp::path(paths::PREFIX))
        .and(warp::path(kind))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::body::content_length_limit(MAX_FORM))
        .and(warp::body::bytes())
        .and(warp::header::optional::<String>("x-twilio-signature"))
        .and(warp::path::full())
        .and(raw_query())
        .and(with_state(state))
        .and_then(
            move |token: String,
                  body: Bytes,
                  sig: Option<String>,
                  path: warp::path::FullPath,
                  query: String,
                  state: ServerState| async move {
                let params: Vec<(String, String)> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                // Signed over the URL Twilio requested, not over what a proxy forwarded to us.
                let url = if query.is_empty() {
                    state.urls.http(path.as_str())
                } else {
                    state.urls.http(&format!("{}?{query}", path.as_str()))
                };
                let valid = sig.as_deref().is_some_and(|sig| {
                    signature::is_valid(state.auth_token.expose(), &url, &params, sig)
                });
                if valid {
                    Ok((SignedForm { token, params }, state))
                } else {
                    // The path ends in the call's token: log the route only.
                    tracing::warn!(
                        route = kind,
                        "request with a wrong X-Twilio-Signature refused"
                    );
                    Err(warp::reject::custom(Refused::Signature))
                }
            },
        )
        .untuple_one()
}

fn health() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path("health"))
        .and(warp::path::end())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})))
}

fn status(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form(paths::STATUS, state).map(|form: SignedForm, state: ServerState| {
        let update = StatusUpdate {
            call_sid: form.get("CallSid").unwrap_or_default().to_string(),
            status: form.get("CallStatus").unwrap_or_default().into(),
            sequence: form.get("SequenceNumber").and_then(|s| s.parse().ok()),
            duration_secs: form.get("CallDuration").and_then(|s| s.parse().ok()),
            answered_by: form.get("AnsweredBy").map(Into::into),
            error_code: form.get("ErrorCode").map(str::to_string),
            error_message: form.get("ErrorMessage").map(str::to_string),
        };
        // A callback for a call that is already over is acknowledged and ignored.
        let _ = state
            .registry
            .deliver(&form.token, CallSignal::Status(update));
        StatusCode::NO_CONTENT
    })
}

fn amd(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form(paths::AMD, state).map(|form: SignedForm, state: ServerState| {
        if let Some(answered_by) = form.get("AnsweredBy") {
            let _ = state
                .registry
                .deliver(&form.token, CallSignal::AnsweredBy(answered_by.into()));
        }
        StatusCode::NO_CONTENT
    })
}

fn media_stream(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path(paths::PREFIX)
        .and(warp::path(paths::MEDIA))
        .and(warp::path::end())
        .and(warp::header::optional::<String>("x-twilio-signature"))
        .and(warp::path::full())
        .and(with_state(state))
        .and_then(
            |sig: Option<String>, path: warp::path::FullPath, state: ServerState| async move {
                // Twilio signs the wss:// URL exactly as written in the TwiML, with no
                // parameters.
                let url = state.urls.ws(path.as_str());
                let valid = sig
                    .as_deref()
                    .is_some_and(|s| signature::is_valid(state.auth_token.expose(), &url, &[], s));
                if valid {
                    Ok(state)
                } else {
                    tracing::warn!(
                        "media stream handshake with a missing or wrong signature refused"
                    );
                    Err(warp::reject::custom(Refused::Signature))
                }
            },
        )
        .and(convert::upgrade())
        .map(|state: ServerState, upgrade: convert::Upgrade| {
            // Twilio's frames are a few hundred bytes; a peer sending megabytes is not Twilio.
            upgrade.reply(MAX_WS_MESSAGE, move |stream, sink| {
                accept_stream(stream, sink, state)
            })
        })
}

/// Read `connected` and `start`, then hand the stream to the call whose token it carries.
async fn accept_stream(mut stream: FrameStream, mut sink: FrameSink, state: ServerState) {
    let start = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(frame) = stream.next().await {
            let Frame::Text(bytes) = frame else {
                if matches!(frame, Frame::Close(_)) {
                    return None;
                }
                continue;
            };
            match media::parse_bytes(&bytes) {
                Ok(TwilioMessage::Start(info)) => return Some(*info),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "unreadable frame before start"),
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(start) = start else {
        let _ = sink
            .send(Frame::Close(Some((1008, "no start message".into()))))
            .await;
        return;
    };
    let token = start
        .custom_parameters
        .get("token")
        .cloned()
        .unwrap_or_default();
    if !start.media_format.is_mulaw_8k_mono() {
        tracing::warn!(format = ?start.media_format, "media stream is not 8 kHz mono μ-law");
    }
    let incoming = IncomingStream {
        start,
        stream,
        sink,
    };
    if let Err(refused) = state.registry.attach_stream(&token, incoming) {
        // The stream (and its sink) came back inside the error path's drop: close politely by
        // letting the socket drop. Log without the token.
        tracing::warn!(reason = %refused, "media stream refused");
    }
}

/// Every refusal and every request that matched no route, as one response each.
async fn recover(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(Refused::Signature) = err.find::<Refused>() {
        return Ok(warp::reply::with_status(
            "invalid or missing X-Twilio-Signature",
            StatusCode::FORBIDDEN,
        )
        .into_response());
    }
    let (code, message) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found")
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "payload too large")
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"error": message})),
        code,
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn tokens_are_cut_from_logged_routes() {
        assert_eq!(
            route("/twilio/status/02534d211f11e456f8e519d447dd8e76"),
            "/twilio/status/…"
        );
        assert_eq!(route("/twilio/media"), "/twilio/media");
        assert_eq!(route("/health"), "/health");
    }
}
