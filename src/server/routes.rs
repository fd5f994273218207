//! One filter per route, and the handlers at their ends. Every Twilio route goes through
//! [`signed_form`] or [`signed_form_bare`] (or the signed handshake of [`media_stream`]), so no
//! handler runs for a request whose `X-Twilio-Signature` does not check out; refusals are
//! rejections, turned into responses in one place, [`recover`]. Signatures are computed over
//! `PUBLIC_URL` and the path and query received, never over the `Host` a proxy forwarded.

use super::{ServerState, convert};
use crate::call::registry::{CallSignal, DialResult, IncomingStream, StatusUpdate};
use crate::call::transfer;
use crate::inbound::Ringing;
use crate::recording::callbacks::RecordingUpdate;
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
    // Outside the request log: warp's trace logs every 5xx as an error, and a draining
    // server's 503 here is the answer it means to give.
    ready(state.clone()).or(super::api::routes(state.api.clone())
        .or(health(state.instance.clone()))
        .or(super::metrics::route(state.metrics.clone()))
        .or(voice(state.clone()))
        .or(status(state.clone()))
        .or(number_status(state.clone()))
        .or(amd(state.clone()))
        .or(recording(state.clone()))
        .or(dial(state.clone()))
        .or(media_stream(state))
        .recover(recover)
        .with(warp::trace(|info| {
            tracing::info_span!("request", method = %info.method(), route = %route(info.path()))
        })))
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

/// A Twilio form POST to `/twilio/{kind}/{token}` whose signature checked out.
fn signed_form(
    kind: &'static str,
    state: ServerState,
) -> impl Filter<Extract = (SignedForm, ServerState), Error = Rejection> + Clone {
    warp::post()
        .and(warp::path(paths::PREFIX))
        .and(warp::path(kind))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(signed_body(kind, state))
        .map(
            |token: String, params: Vec<(String, String)>, state: ServerState| {
                (SignedForm { token, params }, state)
            },
        )
        .untuple_one()
}

/// A Twilio form POST to `/twilio/{kind}`, a URL with no token (a phone number's Voice URL and
/// status callback, set once in the Console), whose signature checked out.
fn signed_form_bare(
    kind: &'static str,
    state: ServerState,
) -> impl Filter<Extract = (SignedForm, ServerState), Error = Rejection> + Clone {
    warp::post()
        .and(warp::path(paths::PREFIX))
        .and(warp::path(kind))
        .and(warp::path::end())
        .and(signed_body(kind, state))
        .map(|params: Vec<(String, String)>, state: ServerState| {
            (
                SignedForm {
                    token: String::new(),
                    params,
                },
                state,
            )
        })
        .untuple_one()
}

/// The form of a request whose `X-Twilio-Signature` checks out against `PUBLIC_URL` plus the
/// path and query received; anything else is refused, and counted.
fn signed_body(
    kind: &'static str,
    state: ServerState,
) -> impl Filter<Extract = (Vec<(String, String)>, ServerState), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_FORM)
        .and(warp::body::bytes())
        .and(warp::header::optional::<String>("x-twilio-signature"))
        .and(warp::path::full())
        .and(raw_query())
        .and(with_state(state))
        .and_then(
            move |body: Bytes,
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
                    Ok((params, state))
                } else {
                    state.metrics.signature_rejected();
                    // The path may end in the call's token: log the route only.
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

/// Liveness, for anyone (no secret in it): 200 and which process answered, so that a check made
/// through a tunnel can tell this process from another one behind the same address. Never
/// cached: a proxy's stored answer would vouch for a process that is gone.
fn health(instance: String) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path("health"))
        .and(warp::path::end())
        .map(move || {
            warp::reply::with_header(
                warp::reply::json(&serde_json::json!({"status": "ok", "instance": instance})),
                "cache-control",
                "no-store",
            )
        })
}

/// `/ready`: 200 while calls are taken; 503 with the reason while they are not.
fn ready(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path("ready"))
        .and(warp::path::end())
        .map(move || match state.reception.readiness() {
            Ok(()) => warp::reply::with_status(
                warp::reply::json(&serde_json::json!({"status": "ready"})),
                StatusCode::OK,
            ),
            Err(why) => warp::reply::with_status(
                warp::reply::json(
                    &serde_json::json!({"status": "not ready", "reason": why.to_string()}),
                ),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        })
}

/// `/twilio/voice`: a phone number's Voice URL. The answer is TwiML: the call connected to a
/// Media Stream with a fresh one-time token, or a short message and a hang-up.
fn voice(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form_bare(paths::VOICE, state).map(|form: SignedForm, state: ServerState| {
        let ringing = Ringing {
            call_sid: form.get("CallSid").unwrap_or_default().to_string(),
            from: form.get("From").unwrap_or_default().to_string(),
            to: form.get("To").unwrap_or_default().to_string(),
        };
        let answer = state.reception.answer(ringing);
        warp::reply::with_header(answer.twiml, "content-type", "text/xml; charset=utf-8")
    })
}

fn status_update(form: &SignedForm) -> StatusUpdate {
    StatusUpdate {
        call_sid: form.get("CallSid").unwrap_or_default().to_string(),
        status: form.get("CallStatus").unwrap_or_default().into(),
        sequence: form.get("SequenceNumber").and_then(|s| s.parse().ok()),
        duration_secs: form.get("CallDuration").and_then(|s| s.parse().ok()),
        answered_by: form.get("AnsweredBy").map(Into::into),
        error_code: form.get("ErrorCode").map(str::to_string),
        error_message: form.get("ErrorMessage").map(str::to_string),
    }
}

fn status(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form(paths::STATUS, state).map(|form: SignedForm, state: ServerState| {
        let update = status_update(&form);
        // A callback for a call that is already over is acknowledged and ignored.
        let _ = state
            .registry
            .deliver(&form.token, CallSignal::Status(Box::new(update)));
        StatusCode::NO_CONTENT
    })
}

/// `/twilio/status` with no token: a phone number's status callback, which Twilio sends for
/// the inbound calls to that number. The call is found by its CallSid.
fn number_status(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form_bare(paths::STATUS, state).map(|form: SignedForm, state: ServerState| {
        let update = status_update(&form);
        let sid = update.call_sid.clone();
        // Calls this process did not answer (another instance's, or over) are acknowledged.
        let _ = state
            .registry
            .deliver_by_sid(&sid, CallSignal::Status(Box::new(update)));
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

/// Twilio's recording status callback. It may come after the call is over; its token is the
/// recording's own, which outlives the call's.
fn recording(
    state: ServerState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form(paths::RECORDING, state).map(|form: SignedForm, state: ServerState| {
        if let Some(update) = RecordingUpdate::from_form(|k| form.get(k).map(str::to_string)) {
            let _ = state.registry.recordings().deliver(&form.token, update);
        }
        StatusCode::NO_CONTENT
    })
}

/// `<Dial action>` of a transferred call: tell the call how it went, and answer with what
/// Twilio does next — hang up after a conversation with the person, or say that nobody could
/// take the call and hang up.
fn dial(state: ServerState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    signed_form(paths::DIAL, state).map(|form: SignedForm, state: ServerState| {
        let status = form.get("DialCallStatus").unwrap_or_default().to_string();
        let answered = transfer::person_answered(&status);
        let result = DialResult {
            status,
            duration_secs: form.get("DialCallDuration").and_then(|s| s.parse().ok()),
        };
        let _ = state
            .registry
            .deliver(&form.token, CallSignal::Dial(result));
        warp::reply::with_header(
            transfer::after_dial_twiml(answered),
            "content-type",
            "text/xml",
        )
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
                    state.metrics.signature_rejected();
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
        home: tokio::runtime::Handle::current(),
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
    // A refusal carries every route's reason: an oversized POST to a callback is also "not
    // a GET" to `/health`, so the more specific reason is looked for first.
    let (code, message) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found")
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "payload too large")
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
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
    use super::*;

    #[test]
    fn tokens_are_cut_from_logged_routes() {
        assert_eq!(
            route("/twilio/status/02534d211f11e456f8e519d447dd8e76"),
            "/twilio/status/…"
        );
        assert_eq!(route("/twilio/media"), "/twilio/media");
        assert_eq!(route("/health"), "/health");
    }

    use crate::call::registry::Registry;
    use crate::props;
    use crate::secret::Secret;
    use crate::twilio::{AnsweredBy, CallStatus};
    use crate::webhooks::PublicUrls;
    use http_body_util::Full;
    use hyper_util::service::TowerToHyperService;
    use rand::Rng;
    use rand::rngs::StdRng;
    use std::sync::Arc;

    const AUTH_TOKEN: &str = "12345";

    use crate::twilio::status::{STATUSES, VERDICTS};

    /// Counters as Twilio writes them, and the near misses a parser might take for numbers.
    const NUMBERS: [&str; 17] = [
        "0",
        "7",
        "42",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "+7",
        " 7",
        "7 ",
        "1e3",
        "0x10",
        "7.0",
        "\u{663}",
        "",
        "NaN",
    ];

    /// A form Twilio might post, or that someone might post in its place: the documented
    /// fields with documented values, near misses and garbage, in any order, repeated, or a
    /// body that is not a well-formed form at all (bad escapes, invalid UTF-8).
    fn form_body(rng: &mut StdRng) -> Vec<u8> {
        const NAMES: [&str; 8] = [
            "CallSid",
            "CallStatus",
            "SequenceNumber",
            "CallDuration",
            "AnsweredBy",
            "ErrorCode",
            "ErrorMessage",
            "Timestamp",
        ];
        if rng.random_bool(0.2) {
            return match rng.random_range(0..3) {
                0 => props::random_bytes(rng, 300),
                1 => props::random_text(
                    rng,
                    &["CallStatus=", "&", "%", "%FF", "%E2%82", "+", "="],
                    30,
                )
                .into_bytes(),
                _ => props::mutate_bytes(
                    rng,
                    b"CallSid=CA1&CallStatus=completed&SequenceNumber=3&CallDuration=42",
                ),
            };
        }
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for _ in 0..rng.random_range(0..10) {
            let name = if rng.random_bool(0.9) {
                NAMES[rng.random_range(0..NAMES.len())].to_string()
            } else {
                props::random_text(rng, &NAMES, 2)
            };
            let value = match rng.random_range(0..5) {
                0 => STATUSES[rng.random_range(0..STATUSES.len())].to_string(),
                1 => VERDICTS[rng.random_range(0..VERDICTS.len())].to_string(),
                2 => NUMBERS[rng.random_range(0..NUMBERS.len())].to_string(),
                3 if rng.random_bool(0.02) => props::long_text(rng).chars().take(20_000).collect(),
                _ => props::random_text(rng, &STATUSES, 4),
            };
            form.append_pair(&name, &value);
        }
        form.finish().into_bytes()
    }

    /// The number a counter's text stands for, decided without `str::parse`'s leniency in
    /// mind: ASCII digits only, after at most one `+`.
    fn counter(text: &str) -> Option<u64> {
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    async fn post<S>(service: &S, path: &str, body: Vec<u8>, signature: &str) -> StatusCode
    where
        S: hyper::service::Service<
                warp::http::Request<Full<Bytes>>,
                Response = warp::reply::Response,
                Error = Infallible,
            >,
    {
        let request = warp::http::Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", body.len())
            .header("x-twilio-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        match service.call(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    }

    /// A number's status callback carries no token: it reaches the inbound call with its
    /// CallSid, only when signed over PUBLIC_URL, and reaches no call placed by token.
    #[tokio::test]
    async fn the_numbers_status_callback_finds_the_inbound_call_by_its_sid() {
        let registry = Arc::new(Registry::new());
        let (_token, mut inbound) = registry.register_inbound("CA1", 10).unwrap();
        let (_placed, mut placed) = registry.register();
        let urls = PublicUrls::new("https://example.test");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = ServerState {
            registry: registry.clone(),
            auth_token: Secret::new(AUTH_TOKEN),
            urls: urls.clone(),
            instance: "test-instance".into(),
            api: Default::default(),
            metrics: metrics.clone(),
            reception: Arc::new(crate::inbound::Reception::new(
                registry,
                metrics.clone(),
                urls.clone(),
                tokio_util::sync::CancellationToken::new(),
            )),
        };
        let service = TowerToHyperService::new(warp::service(routes(state)));
        let path = "/twilio/status";
        let body = b"CallSid=CA1&CallStatus=completed&CallDuration=12&Direction=inbound".to_vec();
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let forged =
            signature::compute(AUTH_TOKEN, "https://proxy.internal/twilio/status", &params);
        assert_eq!(
            post(&service, path, body.clone(), &forged).await,
            StatusCode::FORBIDDEN
        );
        assert!(inbound.try_recv().is_err());
        assert_eq!(metrics.signature_rejections(), 1);
        let signed = signature::compute(AUTH_TOKEN, &urls.http(path), &params);
        assert_eq!(
            post(&service, path, body, &signed).await,
            StatusCode::NO_CONTENT
        );
        match inbound.try_recv() {
            Ok(CallSignal::Status(update)) => {
                assert_eq!(update.status, CallStatus::Completed);
                assert_eq!(update.duration_secs, Some(12));
            }
            other => panic!("{other:?}"),
        }
        assert!(placed.try_recv().is_err());
    }

    /// `/health` says which process answered, is never cached, and carries no secret.
    #[tokio::test]
    async fn health_names_this_process_and_nothing_secret() {
        let registry = Arc::new(Registry::new());
        let urls = PublicUrls::new("https://example.test");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = ServerState {
            registry: registry.clone(),
            auth_token: Secret::new(AUTH_TOKEN),
            urls: urls.clone(),
            instance: "0123456789abcdef".into(),
            api: Default::default(),
            metrics: metrics.clone(),
            reception: Arc::new(crate::inbound::Reception::new(
                registry,
                metrics,
                urls,
                tokio_util::sync::CancellationToken::new(),
            )),
        };
        let service = TowerToHyperService::new(warp::service(routes(state)));
        let request = warp::http::Request::get("/health")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = match hyper::service::Service::call(&service, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "ok", "instance": "0123456789abcdef"})
        );
    }

    /// A transfer's `<Dial action>`: signed, it tells the call how the transfer went and
    /// answers with what Twilio does next; forged, it is refused and changes nothing.
    #[tokio::test]
    async fn the_dial_action_reports_the_transfer_and_answers_with_twiml() {
        let registry = Arc::new(Registry::new());
        let (token, mut signals) = registry.register();
        let urls = PublicUrls::new("https://example.test");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = ServerState {
            registry: registry.clone(),
            auth_token: Secret::new(AUTH_TOKEN),
            urls: urls.clone(),
            instance: "0123456789abcdef".into(),
            api: Default::default(),
            metrics: metrics.clone(),
            reception: Arc::new(crate::inbound::Reception::new(
                registry.clone(),
                metrics,
                urls.clone(),
                tokio_util::sync::CancellationToken::new(),
            )),
        };
        let service = TowerToHyperService::new(warp::service(routes(state)));
        let path = format!("/{}/{}/{token}", paths::PREFIX, paths::DIAL);
        for (status, says) in [("no-answer", true), ("completed", false)] {
            let params = vec![
                ("CallSid".to_string(), "CA1".to_string()),
                ("DialCallStatus".to_string(), status.to_string()),
                ("DialCallDuration".to_string(), "7".to_string()),
            ];
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish()
                .into_bytes();
            let signature = signature::compute(AUTH_TOKEN, &urls.http(&path), &params);
            assert_eq!(
                post(&service, &path, body.clone(), "forged").await,
                StatusCode::FORBIDDEN
            );
            assert!(signals.try_recv().is_err());
            let request = warp::http::Request::post(path.as_str())
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", body.len())
                .header("x-twilio-signature", signature)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = match hyper::service::Service::call(&service, request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/xml");
            let twiml = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let twiml = String::from_utf8_lossy(&twiml);
            assert_eq!(twiml.contains("<Say>"), says, "{twiml}");
            assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");
            match signals.try_recv() {
                Ok(CallSignal::Dial(result)) => {
                    assert_eq!(result.status, status);
                    assert_eq!(result.duration_secs, Some(7));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Whatever form reaches a callback route, signed, it is read field by field as documented:
    /// a status or verdict that is not a documented one is `Other` with its text, a counter
    /// that is not a plain number is `None`, the first of repeated fields counts, and the
    /// call gets exactly one signal. The same form with a wrong signature changes nothing.
    #[tokio::test]
    async fn any_signed_form_is_read_field_by_field() {
        let registry = Arc::new(Registry::new());
        let (token, mut signals) = registry.register();
        let urls = PublicUrls::new("https://example.test/base");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = ServerState {
            registry: registry.clone(),
            auth_token: Secret::new(AUTH_TOKEN),
            urls: urls.clone(),
            api: Default::default(),
            instance: "test-instance".into(),
            metrics: metrics.clone(),
            reception: Arc::new(crate::inbound::Reception::new(
                registry.clone(),
                metrics,
                urls.clone(),
                tokio_util::sync::CancellationToken::new(),
            )),
        };
        let service = TowerToHyperService::new(warp::service(routes(state)));
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(51);
        for case in 0..props::cases() {
            let kind = [paths::STATUS, paths::AMD][rng.random_range(0..2)];
            let path = format!("/{}/{kind}/{token}", paths::PREFIX);
            let body = form_body(&mut rng);
            let shown = props::shorten(&format!(
                "case {case}: {:?}",
                String::from_utf8_lossy(&body)
            ));
            // Twilio signs the form's decoded pairs, which is what the server checks.
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let signature = signature::compute(AUTH_TOKEN, &urls.http(&path), &params);
            // Its size is refused before its signature is checked, as a body too large to read.
            if body.len() as u64 > MAX_FORM {
                assert_eq!(
                    post(&service, &path, body, &signature).await,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "{shown}"
                );
                assert!(signals.try_recv().is_err(), "{shown}");
                continue;
            }
            if rng.random_bool(0.2) {
                let forged = format!("A{}", &signature[1..]);
                let forged = if forged == signature {
                    format!("B{}", &signature[1..])
                } else {
                    forged
                };
                assert_eq!(
                    post(&service, &path, body, &forged).await,
                    StatusCode::FORBIDDEN,
                    "{shown}"
                );
                assert!(signals.try_recv().is_err(), "{shown}");
                continue;
            }
            assert_eq!(
                post(&service, &path, body, &signature).await,
                StatusCode::NO_CONTENT,
                "{shown}"
            );
            let first = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            match (kind, signals.try_recv()) {
                (paths::STATUS, Ok(CallSignal::Status(update))) => {
                    let status = first("CallStatus").unwrap_or_default();
                    assert_eq!(update.status.as_str(), status, "{shown}");
                    assert_eq!(
                        matches!(update.status, CallStatus::Other(_)),
                        !STATUSES.contains(&status),
                        "{shown}"
                    );
                    let sequence = first("SequenceNumber").and_then(counter);
                    assert_eq!(
                        update.sequence.map(u64::from),
                        sequence.filter(|&n| n <= u64::from(u32::MAX)),
                        "{shown}"
                    );
                    assert_eq!(
                        update.duration_secs,
                        first("CallDuration").and_then(counter),
                        "{shown}"
                    );
                    assert_eq!(
                        update.call_sid,
                        first("CallSid").unwrap_or_default(),
                        "{shown}"
                    );
                    assert_eq!(
                        update.answered_by.as_ref().map(AnsweredBy::as_str),
                        first("AnsweredBy"),
                        "{shown}"
                    );
                    assert_eq!(update.error_code.as_deref(), first("ErrorCode"), "{shown}");
                    assert_eq!(
                        update.error_message.as_deref(),
                        first("ErrorMessage"),
                        "{shown}"
                    );
                }
                (paths::AMD, Ok(CallSignal::AnsweredBy(verdict))) => {
                    let text = first("AnsweredBy").expect("a verdict only when one was sent");
                    assert_eq!(verdict.as_str(), text, "{shown}");
                    assert_eq!(
                        matches!(verdict, AnsweredBy::Other(_)),
                        !VERDICTS.contains(&text),
                        "{shown}"
                    );
                }
                (paths::AMD, Err(_)) => assert_eq!(first("AnsweredBy"), None, "{shown}"),
                (_, signal) => panic!("{shown}: {signal:?}"),
            }
            assert!(
                signals.try_recv().is_err(),
                "one signal per callback: {shown}"
            );
        }
    }
}
