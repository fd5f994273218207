//! The call API of `dialer serve`, in process against the simulators: authentication, the
//! checks a campaign makes, limits, the event stream and its resumption, hang-ups, and the
//! remote dialer that `--server` uses, through a connection that drops mid-call.

use crate::helpers::SPEED;
use dialer::call::dialer::Dialer;
use dialer::events::{CallEvent, EndedBy, FinalStatus};
use dialer::phone::{AllowList, E164};
use dialer::remote::{RemoteDialer, RemoteTimings};
use dialer::secret::Secret;
use dialer::settings::ApiSettings;
use dialer::shutdown::Shutdown;
use dialer::startup::{self, App};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const KEY: &str = "test-key-0123456789";

struct Server {
    app: App,
    base: String,
    http: reqwest::Client,
    /// The server's RECORDINGS_DIR.
    recordings: tempfile::TempDir,
    _shutdown: Shutdown,
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut ApiSettings)) -> Server {
        let shutdown = Shutdown::new();
        let (settings, sim) = startup::simulate(SPEED, None, &shutdown)
            .await
            .expect("simulators start");
        let app = App::start(settings, Some(sim), &shutdown)
            .await
            .expect("app starts");
        let recordings = tempfile::tempdir().unwrap();
        let mut api = ApiSettings {
            key: Some(Secret::new(KEY)),
            rate_per_minute: 600,
            max_calls: 10,
            dnc_file: None,
            window: None,
            recordings_dir: recordings.path().to_path_buf(),
        };
        tweak(&mut api);
        let none: [&str; 0] = [];
        app.enable_api(&api, AllowList::new(&none).unwrap(), &shutdown)
            .expect("api enabled");
        Server {
            base: format!("http://{}", app.server_addr),
            app,
            http: reqwest::Client::new(),
            recordings,
            _shutdown: shutdown,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }

    async fn post(&self, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .req(reqwest::Method::POST, "/api/calls")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap(), headers)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn delete(&self, sid: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::DELETE, &format!("/api/calls/{sid}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The call's event stream from `last_id` on, read to its end: `(id, event, data)`.
    async fn events(&self, sid: &str, last_id: Option<usize>) -> Vec<(usize, String, Value)> {
        let mut rb = self.req(reqwest::Method::GET, &format!("/api/calls/{sid}/events"));
        if let Some(id) = last_id {
            rb = rb.header("Last-Event-ID", id.to_string());
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let text = tokio::time::timeout(Duration::from_secs(60), r.text())
            .await
            .expect("the stream closes after the call ends")
            .unwrap();
        parse_sse(&text)
    }
}

/// Events of a whole `text/event-stream` body, each with its `id`, `event` and JSON `data`.
fn parse_sse(text: &str) -> Vec<(usize, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<usize>().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            Some((id?, kind?, data?))
        })
        .collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401_and_the_right_one_is_let_in() {
    let s = Server::start(|_| {}).await;
    let url = format!("{}/api/calls", s.base);
    for request in [
        s.http.get(&url),
        s.http.get(&url).bearer_auth("wrong"),
        s.http.get(&url).bearer_auth(format!("{KEY}x")),
        s.http.get(&url).header("Authorization", KEY),
        s.http.post(&url).json(&json!({"to": "+12025550100"})),
        s.http
            .delete(format!("{url}/CA0123456789abcdef0123456789abcdef"))
            .bearer_auth("wrong"),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "unauthorized");
        assert!(!body.to_string().contains(KEY));
    }
    let (status, body) = s.get("/api/calls").await;
    assert_eq!((status, &body["calls"]), (200, &json!([])));
    assert_eq!(s.app.api_live_calls(), 0, "nothing was placed");
}

#[tokio::test]
async fn bad_numbers_dnc_malformed_json_and_unknown_routes_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("dnc.txt");
    std::fs::write(&dnc, "+12025550109\n(202) 555-0110\n").unwrap();
    let s = Server::start(|api| {
        api.dnc_file = Some(dnc.clone());
    })
    .await;
    for (to, code) in [
        ("12", "invalid_number"),
        ("not a number", "invalid_number"),
        ("+19005550100", "refused_number"),
        ("+12029115555", "refused_number"),
        ("+12025550109", "do_not_call"),
        ("+12025550110", "do_not_call"),
    ] {
        let (status, body, _) = s.post(json!({"to": to})).await;
        assert_eq!((status, error_code(&body)), (422, code), "{to}: {body}");
    }
    // The list is read at each request: a number added now is refused now.
    std::fs::write(&dnc, "+12025550109\n+12025550112\n").unwrap();
    let (status, body, _) = s.post(json!({"to": "+12025550112"})).await;
    assert_eq!((status, error_code(&body)), (422, "do_not_call"), "{body}");

    for bad in ["{\"to\": ", "not json", ""] {
        let r = s
            .req(reqwest::Method::POST, "/api/calls")
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "malformed_json", "{bad:?}");
    }
    let (status, body, _) = s.post(json!({"greeting": "no number"})).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"));
    let (status, body, _) = s
        .post(json!({"to": "+12025550100", "ring_timeout": 5}))
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_ring_timeout"));
    for (extra, code) in [
        (json!({"keypad": {"1": "confirmed"}}), "invalid_keypad"),
        (
            json!({"dispositions": ["confirmed"], "keypad": {"1x": "confirmed"}}),
            "invalid_keypad",
        ),
        (
            json!({"dispositions": ["confirmed"], "transfer_on": ["sold"]}),
            "invalid_transfer_on",
        ),
        (
            json!({"agent": {"greeting": "Hi", "unknown_key": 1}}),
            "invalid_request",
        ),
    ] {
        let mut body = json!({"to": "+12025550100"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, reply, _) = s.post(body.clone()).await;
        assert_eq!(error_code(&reply), code, "{body}: {reply}");
        assert!(status == 422 || status == 400, "{status}");
    }

    for path in [
        "/api/nope",
        "/api/calls/CA0123456789abcdef0123456789abcdef/x",
        "/api",
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}");
    }
    let (status, body) = s.get("/api/calls/CAnot-a-sid").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let r = s
        .req(reqwest::Method::PUT, "/api/calls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.app.api_live_calls(), 0, "nothing was placed");
}

#[tokio::test]
async fn outside_the_calling_window_is_422() {
    use chrono::Timelike;
    // An hour of the day that is not now, in UTC.
    let hours = if chrono::Utc::now().hour() < 12 {
        "13:00-14:00"
    } else {
        "01:00-02:00"
    };
    let window =
        dialer::campaign::window::CallingWindow::parse(hours, &["mon-sun".into()]).unwrap();
    let s = Server::start(|api| api.window = Some((window, None))).await;
    let (status, body, _) = s.post(json!({"to": "+12025550100"})).await;
    assert_eq!((status, error_code(&body)), (422, "no_timezone"), "{body}");
    let (status, body, _) = s
        .post(json!({"to": "+12025550100", "timezone": "Mars/Olympus"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_timezone"),
        "{body}"
    );
    let (status, body, _) = s
        .post(json!({"to": "+12025550100", "timezone": "UTC"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "outside_window"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("opens at")
    );
    let tz: chrono_tz::Tz = "UTC".parse().unwrap();
    let s = Server::start(|api| api.window = Some((window, Some(tz)))).await;
    let (status, body, _) = s.post(json!({"to": "+12025550100"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "outside_window"),
        "{body}"
    );
    assert_eq!(s.app.api_live_calls(), 0);
}

#[tokio::test]
async fn over_the_live_call_limit_or_the_request_rate_is_429_with_retry_after() {
    let s = Server::start(|api| api.max_calls = 1).await;
    // Rings until its ring timeout.
    let (status, first, _) = s
        .post(json!({"to": "+12025550102", "ring_timeout": 15}))
        .await;
    assert_eq!(status, 201, "{first}");
    let sid = first["sid"].as_str().unwrap().to_string();
    let (status, body, _) = s.post(json!({"to": "+12025550102"})).await;
    assert_eq!((status, error_code(&body)), (409, "already_live"), "{body}");
    let (status, body, headers) = s.post(json!({"to": "+12025550100"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "too_many_calls"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    let (status, _) = s.delete(&sid).await;
    assert_eq!(status, 202);

    let s = Server::start(|api| api.rate_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(s.get("/api/calls").await.0, 200);
    }
    let r = s
        .req(reqwest::Method::GET, "/api/calls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
}

#[tokio::test]
async fn a_call_is_followed_through_its_event_stream_and_resumed_after_any_event() {
    let s = Server::start(|_| {}).await;
    // A recorded call must say so (the consent check), as it must on the command line.
    let (status, refused, _) = s
        .post(json!({
            "to": "+12025550100",
            "greeting": "Hi {{first_name}}, this is an automated assistant. Can you make it?",
            "variables": {"first_name": "Ana"},
            "record": true
        }))
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (422, "invalid_agent"),
        "{refused}"
    );
    let (status, created, headers) = s
        .post(json!({
            "to": "+12025550100",
            "greeting": "Hi {{first_name}}, this is an automated assistant, and this call is recorded. Can you make it?",
            "variables": {"first_name": "Ana"},
            "record": true
        }))
        .await;
    assert_eq!(status, 201, "{created}");
    let sid = created["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("CA"));
    assert!(created["status"].is_string());
    assert_eq!(headers["location"], format!("/api/calls/{sid}").as_str());

    let events = s.events(&sid, None).await;
    let ids: Vec<usize> = events.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        ids,
        (0..events.len()).collect::<Vec<_>>(),
        "ids are the indices"
    );
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(&kinds[..2], ["dialing", "created"]);
    assert_eq!(kinds.last(), Some(&"ended"));
    for (_, kind, data) in &events {
        assert_eq!(data["event"], kind.as_str());
        // Each one reads back as the event it was.
        serde_json::from_value::<CallEvent>(data.clone()).unwrap();
    }
    let outcome = &events.last().unwrap().2["outcome"];
    assert_eq!(outcome["status"], "completed");
    assert_eq!(outcome["call_sid"], sid.as_str());
    // `record` reached the call: its WAV is in the server's
    // RECORDINGS_DIR.
    let wav = s.recordings.path().join(format!("{sid}.wav"));
    assert_eq!(
        outcome["local_recording"]["path"].as_str(),
        Some(wav.to_string_lossy().as_ref()),
        "{outcome}"
    );
    assert!(wav.is_file());
    let first_line = events.iter().find(|(_, k, _)| k == "line").unwrap();
    assert!(
        first_line.2["line"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Hi Ana,"),
        "the greeting's variable was filled: {}",
        first_line.2
    );

    // Resuming after any event gives exactly the rest.
    for last in [0, 3, events.len() - 2, events.len() - 1] {
        let rest = s.events(&sid, Some(last)).await;
        assert_eq!(rest, events[last + 1..].to_vec(), "after {last}");
    }

    let (status, view) = s.get(&format!("/api/calls/{sid}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("ended"), Some("completed"))
    );
    assert_eq!(view["outcome"]["status"], "completed");
    assert!(!view["transcript"].as_array().unwrap().is_empty());
    let (_, list) = s.get("/api/calls").await;
    assert_eq!(list["calls"][0]["sid"], sid.as_str());
}

#[tokio::test]
async fn delete_hangs_up_a_live_call_and_is_idempotent() {
    let s = Server::start(|_| {}).await;
    // The silent callee answers and says nothing: the call stays up until hung up.
    let (status, created, _) = s.post(json!({"to": "+12025550107"})).await;
    assert_eq!(status, 201, "{created}");
    let sid = created["sid"].as_str().unwrap().to_string();
    let stream = {
        let r = s
            .req(reqwest::Method::GET, &format!("/api/calls/{sid}/events"))
            .send()
            .await
            .unwrap();
        tokio::spawn(async move { r.text().await.unwrap() })
    };
    // Hang up once it is connected.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, view) = s.get(&format!("/api/calls/{sid}")).await;
            if view["status"] == "in-progress" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the call is answered");
    let (status, view) = s.delete(&sid).await;
    assert_eq!(status, 202, "{view}");
    let (status, _) = s.delete(&sid).await;
    assert!(
        status == 202 || status == 200,
        "asking again while it ends: {status}"
    );
    let text = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .expect("the stream ends after the hang-up")
        .unwrap();
    let events = parse_sse(&text);
    let (_, kind, ended) = events.last().unwrap();
    assert_eq!(kind, "ended");
    assert_eq!(ended["outcome"]["ended_by"], "operator");
    let (status, view) = s.delete(&sid).await;
    assert_eq!((status, view["state"].as_str()), (200, Some("ended")));
    let (status, body) = s.delete("CA0123456789abcdef0123456789abcdef").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    assert_eq!(s.app.api_live_calls(), 0);
}

/// A TCP proxy whose connections can all be cut at once.
struct Proxy {
    url: url::Url,
    cut: watch::Sender<u32>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (cut, _) = watch::channel(0u32);
        let connections = Arc::new(AtomicUsize::new(0));
        let (cut_rx, count) = (cut.subscribe(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut cut = cut_rx.clone();
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {
                            let _ = inbound.shutdown().await;
                        }
                    }
                });
            }
        });
        Proxy {
            url,
            cut,
            connections,
        }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn the_remote_dialer_resumes_a_dropped_event_stream_without_losing_or_repeating_events() {
    let s = Server::start(|_| {}).await;
    let proxy = Proxy::start(s.app.server_addr).await;
    let dialer = RemoteDialer::new(&proxy.url, Some(Secret::new(KEY)))
        .unwrap()
        .with_timings(RemoteTimings {
            reconnect_for: Duration::from_secs(20),
            silence: Duration::from_secs(20),
        });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let request = crate::helpers::request("+12025550100", Arc::new(dialer::call::tools::NoTools));
    let call =
        tokio::spawn(async move { dialer.dial(request, tx, CancellationToken::new()).await });
    let mut seen = Vec::new();
    let mut cuts = 0;
    while let Some(event) = rx.recv().await {
        // Cut the stream after the first and the third line of the conversation.
        if matches!(event, CallEvent::Line { .. }) {
            let lines = seen
                .iter()
                .filter(|e| matches!(e, CallEvent::Line { .. }))
                .count();
            if lines == 0 || lines == 2 {
                proxy.cut_all();
                cuts += 1;
            }
        }
        seen.push(event);
    }
    let outcome = call.await.unwrap().expect("the call ends");
    assert_eq!(outcome.status, FinalStatus::Completed);
    assert_eq!(cuts, 2);
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 3,
        "a connection, and a new one for each cut"
    );
    // Exactly the server's events, in order, once each.
    let sid = outcome.call_sid.clone().unwrap();
    let on_server: Vec<CallEvent> = s
        .events(&sid, None)
        .await
        .into_iter()
        .map(|(_, _, data)| serde_json::from_value(data).unwrap())
        .collect();
    assert_eq!(seen, on_server);
    assert!(matches!(seen.last(), Some(CallEvent::Ended { .. })));
}

#[tokio::test]
async fn the_remote_dialer_hangs_up_through_the_server_and_reconciles_through_it() {
    let s = Server::start(|_| {}).await;
    let url = url::Url::parse(&s.base).unwrap();
    let dialer = Arc::new(RemoteDialer::new(&url, Some(Secret::new(KEY))).unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let request = crate::helpers::request("+12025550107", Arc::new(dialer::call::tools::NoTools));
    let call = {
        let (dialer, cancel) = (dialer.clone(), cancel.clone());
        tokio::spawn(async move { dialer.dial(request, tx, cancel).await })
    };
    let mut sid = None;
    while let Some(event) = rx.recv().await {
        match &event {
            CallEvent::Created { call_sid, .. } => sid = Some(call_sid.clone()),
            CallEvent::Connected { .. } => cancel.cancel(),
            _ => {}
        }
    }
    let outcome = call.await.unwrap().unwrap();
    assert_eq!(outcome.ended_by, EndedBy::Operator);
    let sid = sid.unwrap();
    assert_eq!(outcome.call_sid.as_deref(), Some(sid.as_str()));

    let snapshot = dialer
        .lookup(&sid)
        .await
        .unwrap()
        .expect("the server knows it");
    assert_eq!(snapshot.final_status(), Some(FinalStatus::Completed));
    assert_eq!(snapshot.to, "+12025550107");
    assert!(
        dialer
            .lookup("CA0123456789abcdef0123456789abcdef")
            .await
            .unwrap()
            .is_none()
    );
    dialer
        .hang_up(&sid)
        .await
        .expect("hanging up an ended call is no error");
    let to = E164::parse("+12025550107").unwrap();
    let found = dialer
        .find_calls_to(&to, chrono::Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(found.iter().any(|c| c.sid == sid), "{found:?}");

    // A number the server refuses comes back as the outcome of a call never placed.
    let (tx, _rx) = mpsc::unbounded_channel();
    let outcome = dialer
        .dial(
            crate::helpers::request("+15005550001", Arc::new(dialer::call::tools::NoTools)),
            tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.status, FinalStatus::Failed);
    assert_eq!(outcome.call_sid, None);
    assert_eq!(outcome.error.unwrap().code.as_deref(), Some("21217"));

    // A wrong key stops a campaign as Twilio's rejected credentials would.
    let wrong = RemoteDialer::new(&url, Some(Secret::new("nope"))).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let e = wrong
        .dial(
            crate::helpers::request("+12025550100", Arc::new(dialer::call::tools::NoTools)),
            tx,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(!e.transient && e.message.contains("DIALER_API_KEY"), "{e}");
}

#[tokio::test]
async fn the_remote_dialer_waits_while_the_server_is_at_its_live_call_limit() {
    let s = Server::start(|api| api.max_calls = 1).await;
    let url = url::Url::parse(&s.base).unwrap();
    let dialer = Arc::new(RemoteDialer::new(&url, Some(Secret::new(KEY))).unwrap());
    let place = |to: &'static str| {
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut request = crate::helpers::request(to, Arc::new(dialer::call::tools::NoTools));
            request.ring_timeout = Duration::from_secs(15);
            let created = async {
                let mut at = None;
                while let Some(e) = rx.recv().await {
                    if matches!(e, CallEvent::Created { .. }) {
                        at = Some(tokio::time::Instant::now());
                    }
                }
                at
            };
            let (outcome, created) =
                tokio::join!(dialer.dial(request, tx, CancellationToken::new()), created);
            (
                outcome.unwrap(),
                created.unwrap(),
                tokio::time::Instant::now(),
            )
        })
    };
    let ringing = place("+12025550102");
    // The first call holds the only place before the second asks.
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.app.api_live_calls() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let waiting = place("+12025550100");
    let (first, _, first_ended) = ringing.await.unwrap();
    let (second, second_created, _) = waiting.await.unwrap();
    assert_eq!(first.status, FinalStatus::NoAnswer);
    assert_eq!(second.status, FinalStatus::Completed);
    assert!(
        second_created >= first_ended - Duration::from_millis(200),
        "placed once the first had ended"
    );
    let (_, list) = s.get("/api/calls").await;
    assert_eq!(list["calls"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_agents_tools_run_on_the_server_and_an_opt_out_reaches_its_dnc_file() {
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("opt-outs.txt");
    let s = Server::start(|api| api.dnc_file = Some(dnc.clone())).await;
    let (status, created, _) = s
        .post(json!({
            "to": "+12025550106",
            "dispositions": ["confirmed", "not_interested"],
            "opt_out": true
        }))
        .await;
    assert_eq!(status, 201, "{created}");
    let events = s.events(created["sid"].as_str().unwrap(), None).await;
    let tool = events
        .iter()
        .find(|(_, k, d)| k == "tool" && d["name"] == "opt_out")
        .expect("the agent called opt_out");
    assert_eq!(tool.2["ok"], true);
    assert_eq!(events.last().unwrap().2["outcome"]["opted_out"], true);
    let list = std::fs::read_to_string(&dnc).unwrap();
    assert!(list.contains("+12025550106"), "{list}");
    let (status, body, _) = s.post(json!({"to": "+12025550106"})).await;
    assert_eq!((status, error_code(&body)), (422, "do_not_call"));

    // Without the tools asked for, the agent has none to call.
    let (status, created, _) = s.post(json!({"to": "+12025550112"})).await;
    assert_eq!(status, 201);
    let events = s.events(created["sid"].as_str().unwrap(), None).await;
    assert!(
        events
            .iter()
            .all(|(_, k, d)| k != "tool" || d["name"] == "end_call" || d["ok"] == false),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_server_that_is_stopping_refuses_new_calls_with_503() {
    let s = Server::start(|_| {}).await;
    s.app.close_api();
    let (status, body, _) = s.post(json!({"to": "+12025550100"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (503, "shutting_down"),
        "{body}"
    );
    // Reading goes on.
    assert_eq!(s.get("/api/calls").await.0, 200);
    assert_eq!(s.app.api_live_calls(), 0);
}
