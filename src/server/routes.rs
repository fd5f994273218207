//! One filter per route, and the handlers at their ends.

use super::{ServerState, convert};
use crate::call::registry::{CallSignal, IncomingStream, StatusUpdate};
use crate::twilio::media::{self, TwilioMessage};
use crate::twilio::{signature, twiml};
use crate::ws::Frame;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// How long a new Media Stream may take to send `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Twilio's webhooks are small forms; anything larger is not Twilio.
const MAX_FORM: u64 = 64 * 1024;

pub(super) fn routes(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    health()
        .or(status(state.clone()))
        .or(amd(state.clone()))
        .or(twiml_route(state.clone()))
        .or(media_stream(state))
        .recover(recover)
        .with(warp::trace::request())
}

fn with_state(
    state: ServerState,
) -> impl Filter<Extract = (ServerState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// A signed Twilio form POST: (token, params, signature header, full path, query).
fn signed_form(
    prefix: &'static str,
) -> impl Filter<
    Extract = (String, Bytes, Option<String>, warp::path::FullPath, String),
    Error = Rejection,
> + Clone {
    warp::post()
        .and(warp::path("twilio"))
        .and(warp::path(prefix))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::body::content_length_limit(MAX_FORM))
        .and(warp::body::bytes())
        .and(warp::header::optional::<String>("x-twilio-signature"))
        .and(warp::path::full())
        .and(raw_query())
}

fn health() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path("health"))
        .and(warp::path::end())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})))
}

fn status(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form("status").and(with_state(state)).map(
        |token: String,
         body: Bytes,
         sig: Option<String>,
         path: warp::path::FullPath,
         query: String,
         state: ServerState| {
            let Some(params) = verify(&state, &body, sig.as_deref(), path.as_str(), &query) else {
                return forbidden();
            };
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let update = StatusUpdate {
                call_sid: get("CallSid").unwrap_or_default(),
                status: get("CallStatus").unwrap_or_default().into(),
                sequence: get("SequenceNumber").and_then(|s| s.parse().ok()),
                duration_secs: get("CallDuration").and_then(|s| s.parse().ok()),
                answered_by: get("AnsweredBy").map(Into::into),
                error_code: get("ErrorCode"),
                error_message: get("ErrorMessage"),
            };
            // A callback for a call that is already over is acknowledged and ignored.
            let _ = state.registry.deliver(&token, CallSignal::Status(update));
            StatusCode::NO_CONTENT.into_response()
        },
    )
}

fn amd(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form("amd").and(with_state(state)).map(
        |token: String,
         body: Bytes,
         sig: Option<String>,
         path: warp::path::FullPath,
         query: String,
         state: ServerState| {
            let Some(params) = verify(&state, &body, sig.as_deref(), path.as_str(), &query) else {
                return forbidden();
            };
            if let Some((_, answered_by)) = params.iter().find(|(k, _)| k == "AnsweredBy") {
                let _ = state
                    .registry
                    .deliver(&token, CallSignal::AnsweredBy(answered_by.as_str().into()));
            }
            StatusCode::NO_CONTENT.into_response()
        },
    )
}

fn twiml_route(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form("twiml").and(with_state(state)).map(
        |token: String,
         body: Bytes,
         sig: Option<String>,
         path: warp::path::FullPath,
         query: String,
         state: ServerState| {
            if verify(&state, &body, sig.as_deref(), path.as_str(), &query).is_none() {
                return forbidden();
            }
            // A call we do not know (or no longer know) is hung up rather than left hanging.
            let doc = state.registry.twiml(&token).unwrap_or_else(twiml::hang_up);
            warp::reply::with_header(doc, "content-type", "text/xml").into_response()
        },
    )
}

fn media_stream(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path("twilio")
        .and(warp::path("media"))
        .and(warp::path::end())
        .and(warp::header::optional::<String>("x-twilio-signature"))
        .and(warp::path::full())
        .and(with_state(state))
        .and(warp::ws())
        .map(
            |sig: Option<String>,
             path: warp::path::FullPath,
             state: ServerState,
             ws: warp::ws::Ws| {
                // Twilio signs the wss:// URL exactly as written in the TwiML, with no parameters.
                let url = format!("{}{}", state.public_ws_url(), path.as_str());
                let ok = sig
                    .as_deref()
                    .is_some_and(|s| signature::is_valid(state.auth_token.expose(), &url, &[], s));
                if !ok {
                    tracing::warn!(
                        "media stream handshake with a missing or wrong signature refused"
                    );
                    return forbidden();
                }
                ws.on_upgrade(move |socket| accept_stream(socket, state))
                    .into_response()
            },
        )
}

/// Read `connected` and `start`, then hand the stream to the call whose token it carries.
async fn accept_stream(socket: warp::ws::WebSocket, state: ServerState) {
    let (mut stream, mut sink) = convert::split(socket);
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

/// Check a form POST's signature; the parsed parameters when it is Twilio's.
fn verify(
    state: &ServerState,
    body: &[u8],
    sig: Option<&str>,
    path: &str,
    query: &str,
) -> Option<Vec<(String, String)>> {
    let sig = sig?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let url = if query.is_empty() {
        format!("{}{}", state.public_url, path)
    } else {
        format!("{}{}?{}", state.public_url, path, query)
    };
    if signature::is_valid(state.auth_token.expose(), &url, &params, sig) {
        Some(params)
    } else {
        tracing::warn!(path, "request with a wrong X-Twilio-Signature refused");
        None
    }
}

fn forbidden() -> warp::reply::Response {
    warp::reply::with_status(
        "invalid or missing X-Twilio-Signature",
        StatusCode::FORBIDDEN,
    )
    .into_response()
}

async fn recover(err: Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
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
