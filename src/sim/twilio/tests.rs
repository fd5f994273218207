//! End-to-end tests of the fake: a real HTTP client against its REST API, a tiny webhook
//! receiver standing in for our server's callback routes, and a tiny WebSocket server standing
//! in for our media stream endpoint. Simulated time runs 20× faster than real time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_util::sync::CancellationToken;

use super::signing::is_signed;
use super::*;
use crate::sim::speech;

const SCALE: TimeScale = TimeScale(0.05);
/// Real-time limit for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

const SILENT: &str = "+12025550107";
const AGREES: &str = "+12025550100";
const BUSY: &str = "+12025550101";
const NO_ANSWER: &str = "+12025550102";
const HANGS_UP: &str = "+12025550104";
const VOICEMAIL: &str = "+12025550105";
const BUSY_THEN_AGREES: &str = "+12025550111";
const FROM: &str = "+15005550006";

struct Fixture {
    twilio: FakeTwilio,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture() -> Fixture {
    fixture_with(FakeTwilioConfig::default()).await
}

/// A fake with `config`, on the tests' time scale.
async fn fixture_with(config: FakeTwilioConfig) -> Fixture {
    let shutdown = CancellationToken::new();
    let config = FakeTwilioConfig {
        time_scale: SCALE,
        ..config
    };
    let twilio = FakeTwilio::start(config, shutdown.clone()).await.unwrap();
    Fixture {
        twilio,
        shutdown,
        http: reqwest::Client::new(),
    }
}

impl Fixture {
    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.twilio.base_url(),
            self.twilio.account_sid()
        )
    }

    fn call_url(&self, sid: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{sid}.json",
            self.twilio.base_url(),
            self.twilio.account_sid()
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req
            .basic_auth(self.twilio.account_sid(), Some(self.twilio.auth_token()))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn create(&self, params: &[(&str, &str)]) -> (u16, Value) {
        self.send(self.http.post(self.calls_url()).form(params))
            .await
    }

    /// Create a call that must succeed; returns its SID.
    async fn place(&self, params: &[(&str, &str)]) -> String {
        let (status, body) = self.create(params).await;
        assert_eq!(status, 201, "{body}");
        body["sid"].as_str().unwrap().to_string()
    }

    async fn update(&self, sid: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.send(self.http.post(self.call_url(sid)).form(params))
            .await
    }

    async fn fetch(&self, sid: &str) -> (u16, Value) {
        self.send(self.http.get(self.call_url(sid))).await
    }

    /// Wait until the call has ended and its callbacks were delivered.
    async fn ended(&self, sid: &str) -> SimCall {
        tokio::time::timeout(PATIENCE, self.twilio.wait_idle())
            .await
            .expect("calls did not end");
        self.twilio.call(sid).unwrap()
    }

    async fn until(&self, sid: &str, what: &str, pred: impl Fn(&SimCall) -> bool) -> SimCall {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let call = self.twilio.call(sid).unwrap();
            if pred(&call) {
                return call;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {call:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn twiml_stream(url: &str, extra_verbs: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}"><Parameter name="session" value="s-1"/><Parameter name="lead" value="42"/></Stream></Connect>{extra_verbs}</Response>"#
    )
}

// ---- a webhook receiver --------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    method: String,
    /// The full URL requested.
    url: String,
    path: String,
    signature: Option<String>,
    params: Vec<(String, String)>,
}

impl Received {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn signed_correctly(&self, token: &str) -> bool {
        is_signed(token, &self.url, &self.params, self.signature.as_deref())
    }
}

#[derive(Clone)]
struct Hooks {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Response bodies by path (TwiML documents); others get an empty 200.
    bodies: Arc<Mutex<HashMap<String, String>>>,
}

impl Hooks {
    async fn start() -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hooks = Hooks {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            bodies: Arc::default(),
        };
        let h = hooks.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let h = h.clone();
                        async move { Ok::<_, Infallible>(h.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        hooks
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let url = format!("http://{}{}", self.addr, req.uri());
        let signature = req
            .headers()
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let params = if method == "POST" {
            url::form_urlencoded::parse(&body).into_owned().collect()
        } else {
            Vec::new()
        };
        self.received.lock().unwrap().push(Received {
            method,
            url,
            path: path.clone(),
            signature,
            params,
        });
        let body = self
            .bodies
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or_default();
        hyper::Response::builder()
            .header("Content-Type", "text/xml")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn serve(&self, path: &str, body: &str) {
        self.bodies.lock().unwrap().insert(path.into(), body.into());
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

// ---- "our server" for media streams --------------------------------------------------------

struct Conn {
    signature: Option<String>,
    ws: WebSocketStream<TcpStream>,
}

struct MediaServer {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl MediaServer {
    /// Accepts every stream, or refuses the handshake with `refuse` as HTTP status.
    async fn start(refuse: Option<u16>) -> MediaServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut signature = None;
                    // The callback's signature is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback =
                        |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                            signature = req
                                .headers()
                                .get("x-twilio-signature")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            match refuse {
                                Some(code) => {
                                    let mut err = ErrorResponse::new(Some("no".into()));
                                    *err.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                                    Err(err)
                                }
                                None => Ok(resp),
                            }
                        };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                        let _ = tx.send(Conn { signature, ws });
                    }
                });
            }
        });
        MediaServer { addr, conns: rx }
    }

    fn url(&self) -> String {
        format!("ws://{}/media", self.addr)
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(PATIENCE, self.conns.recv())
            .await
            .expect("no stream connected")
            .unwrap()
    }
}

impl Conn {
    /// The next JSON message, `None` once the socket is closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("stream went quiet");
            match msg {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Skip `media` until a message with another event; returns it and the media skipped.
    async fn next_non_media(&mut self) -> (Option<Value>, Vec<Value>) {
        let mut media = Vec::new();
        loop {
            match self.next().await {
                Some(m) if m["event"] == "media" => media.push(m),
                other => return (other, media),
            }
        }
    }

    /// `connected` and `start`; returns the streamSid.
    async fn handshake(&mut self) -> String {
        assert_eq!(self.next().await.unwrap()["event"], "connected");
        let start = self.next().await.unwrap();
        assert_eq!(start["event"], "start");
        start["streamSid"].as_str().unwrap().to_string()
    }

    async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn send_audio(&mut self, sid: &str, audio: &[u8]) {
        for chunk in audio.chunks(800) {
            self.send_json(json!({"event": "media", "streamSid": sid, "media": {"payload": STANDARD.encode(chunk)}}))
                .await;
        }
    }

    async fn send_mark(&mut self, sid: &str, name: &str) {
        self.send_json(json!({"event": "mark", "streamSid": sid, "mark": {"name": name}}))
            .await;
    }
}

fn payload(m: &Value) -> Vec<u8> {
    STANDARD
        .decode(m["media"]["payload"].as_str().unwrap())
        .unwrap()
}

/// Decode what the callee said in inbound media frames.
fn utterances(frames: &[Value]) -> Vec<String> {
    let mut l = speech::Listener::new();
    let mut out = Vec::new();
    for f in frames {
        for h in l.feed(&payload(f)) {
            if let speech::Heard::Utterance(t) = h {
                out.push(t);
            }
        }
    }
    out
}

// ---- REST ------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_credentials_get_401_20003() {
    let f = fixture().await;
    let params = [("To", AGREES), ("From", FROM), ("Twiml", "<Response/>")];
    let expected = json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401});

    let resp = f
        .http
        .post(f.calls_url())
        .basic_auth(f.twilio.account_sid(), Some("wrong"))
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"Twilio API\""
    );
    assert_eq!(resp.json::<Value>().await.unwrap(), expected);

    let resp = f
        .http
        .post(f.calls_url())
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // An API key is not simulated; neither is another account in the path.
    let resp = f
        .http
        .post(f.calls_url())
        .basic_auth(
            "SK00000000000000000000000000000000",
            Some(f.twilio.auth_token()),
        )
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let other = f
        .calls_url()
        .replace(f.twilio.account_sid(), "AC11111111111111111111111111111111");
    let (status, body) = f.send(f.http.post(other).form(&params)).await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20003)));

    assert!(f.twilio.calls().is_empty());
    let reqs = f.twilio.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter()
            .all(|r| r.status == 401 && r.error_code == Some(20003))
    );
    assert_eq!(reqs[0].to.as_deref(), Some(AGREES));
}

#[tokio::test]
async fn create_validation_follows_twilio() {
    let f = fixture().await;
    let twiml = "<Response><Hangup/></Response>";
    let long = format!("<Response><Say>{}</Say></Response>", "a".repeat(4000));
    let cases: Vec<(Vec<(&str, &str)>, u64)> = vec![
        (vec![("From", FROM), ("Twiml", twiml)], 21201),
        (vec![("To", AGREES), ("Twiml", twiml)], 21213),
        (vec![("To", AGREES), ("From", FROM)], 21205),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("Url", "https://example.com/t"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("ApplicationSid", "AP00000000000000000000000000000000"),
            ],
            21218,
        ),
        (
            vec![("To", AGREES), ("From", FROM), ("Url", "not a url")],
            21205,
        ),
        (
            vec![("To", AGREES), ("From", FROM), ("Twiml", &long)],
            32018,
        ),
        (
            vec![("To", "12345"), ("From", FROM), ("Twiml", twiml)],
            21211,
        ),
        (
            vec![("To", "+1 (415) 555-01"), ("From", FROM), ("Twiml", twiml)],
            21211,
        ),
        (vec![("To", FROM), ("From", FROM), ("Twiml", twiml)], 21211),
        (
            vec![("To", "+15005550001"), ("From", FROM), ("Twiml", twiml)],
            21217,
        ),
        (
            vec![("To", "+15005550002"), ("From", FROM), ("Twiml", twiml)],
            21214,
        ),
        (
            vec![("To", "+15005550003"), ("From", FROM), ("Twiml", twiml)],
            21215,
        ),
        (
            vec![("To", "+15005550004"), ("From", FROM), ("Twiml", twiml)],
            21216,
        ),
        (
            vec![("To", AGREES), ("From", "+14155550199"), ("Twiml", twiml)],
            21210,
        ),
        (
            vec![("To", AGREES), ("From", "+15005550001"), ("Twiml", twiml)],
            21212,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("Timeout", "0"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("Timeout", "601"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("Timeout", "ten"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("TimeLimit", "-1"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("StatusCallback", "https://example.com/s"),
                ("StatusCallbackEvent", "initiated ringing"),
            ],
            21626,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("StatusCallbackEvent", "in-progress"),
            ],
            21626,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("StatusCallback", "ftp://example.com/s"),
            ],
            21609,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("StatusCallback", "https://bad_host.example.com/s"),
            ],
            21609,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("StatusCallbackMethod", "PUT"),
            ],
            21200,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("MachineDetection", "enable"),
            ],
            21234,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("MachineDetection", "Enable"),
                ("AsyncAmd", "yes"),
            ],
            21234,
        ),
        (
            vec![
                ("To", AGREES),
                ("From", FROM),
                ("Twiml", twiml),
                ("MachineDetection", "Enable"),
                ("MachineDetectionTimeout", "100"),
            ],
            21234,
        ),
    ];
    for (params, code) in cases {
        let (status, body) = f.create(&params).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(code)),
            "{params:?} → {body}"
        );
        assert_eq!(body["status"], 400);
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(f.twilio.calls().is_empty());

    // JSON is not a form: Twilio sees no parameters at all.
    let (status, body) = f
        .send(
            f.http
                .post(f.calls_url())
                .json(&json!({"To": AGREES, "From": FROM, "Twiml": twiml})),
        )
        .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21201)));

    // Unknown parameters are ignored; the maximum Twiml length is accepted.
    let exact = format!("<Response><Say>{}</Say></Response>", "a".repeat(4000 - 32));
    assert_eq!(exact.chars().count(), 4000);
    let (status, _) = f
        .create(&[
            ("To", AGREES),
            ("From", FROM),
            ("Twiml", &exact),
            ("NoSuchParam", "x"),
        ])
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn create_returns_the_call_resource() {
    let f = fixture().await;
    let (status, body) = f
        .create(&[
            ("To", "+1 202 555 0107"),
            ("From", FROM),
            ("Twiml", "<Response><Pause length=\"60\"/></Response>"),
        ])
        .await;
    assert_eq!(status, 201);
    let sid = body["sid"].as_str().unwrap();
    assert!(
        sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(body["account_sid"], f.twilio.account_sid());
    assert_eq!(body["to"], SILENT);
    assert_eq!(body["to_formatted"], "(202) 555-0107");
    assert_eq!(body["from"], FROM);
    assert_eq!(body["from_formatted"], "(500) 555-0006");
    assert!(body["phone_number_sid"].as_str().unwrap().starts_with("PN"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["direction"], "outbound-api");
    assert_eq!(body["api_version"], "2010-04-01");
    assert_eq!(body["price_unit"], "USD");
    assert_eq!(body["queue_time"], "0");
    for null in [
        "start_time",
        "end_time",
        "duration",
        "price",
        "answered_by",
        "parent_call_sid",
    ] {
        assert!(body[null].is_null(), "{null}: {}", body[null]);
    }
    let created = body["date_created"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc2822(created).is_ok(),
        "{created}"
    );
    assert!(created.ends_with("+0000"));
    let uri = format!(
        "/2010-04-01/Accounts/{}/Calls/{sid}",
        f.twilio.account_sid()
    );
    assert_eq!(body["uri"], format!("{uri}.json"));
    assert_eq!(
        body["subresource_uris"]["streams"],
        format!("{uri}/Streams.json")
    );
    assert_eq!(
        body["subresource_uris"]["recordings"],
        format!("{uri}/Recordings.json")
    );

    // Fetch shows the live status; hang up and it shows the end.
    f.until(sid, "answer", |c| c.status == "in-progress").await;
    let (status, live) = f.fetch(sid).await;
    assert_eq!(
        (status, live["status"].as_str()),
        (200, Some("in-progress"))
    );
    assert!(live["start_time"].is_string());
    let (status, done) = f.update(sid, &[("Status", "completed")]).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));
    assert!(done["duration"].is_string());
    assert!(done["end_time"].is_string());
    assert!(done["price"].as_str().unwrap().starts_with('-'));
    let call = f.ended(sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));

    let reqs = f.twilio.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].status, 201);
    assert_eq!(reqs[0].call_sid.as_deref(), Some(sid));
    assert!(
        reqs[0]
            .params
            .iter()
            .any(|(k, v)| k == "To" && v == "+1 202 555 0107")
    );
}

#[tokio::test]
async fn unknown_calls_are_404_and_ended_calls_cannot_be_updated() {
    let f = fixture().await;
    let missing = "CA00000000000000000000000000000000";
    let (status, body) = f.fetch(missing).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(20404)));
    let (status, body) = f.update(missing, &[("Status", "completed")]).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(20404)));

    let sid = f
        .place(&[("To", BUSY), ("From", FROM), ("Twiml", "<Response/>")])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(call.status, "busy");
    let (status, body) = f.update(&sid, &[("Status", "completed")]).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21220)));
    let (status, body) = f.update(&sid, &[("Status", "hangup")]).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21200)));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let f = fixture().await;
    let twiml = "<Response><Hangup/></Response>";
    let a = f
        .place(&[("To", BUSY), ("From", FROM), ("Twiml", twiml)])
        .await;
    let b = f
        .place(&[("To", SILENT), ("From", FROM), ("Twiml", twiml)])
        .await;
    let c = f
        .place(&[("To", BUSY), ("From", FROM), ("Twiml", twiml)])
        .await;
    f.ended(&a).await;

    let list = |q: Vec<(&'static str, String)>| f.send(f.http.get(f.calls_url()).query(&q));
    let (status, page) = list(vec![("To", BUSY.to_string())]).await;
    assert_eq!(status, 200);
    let sids: Vec<&str> = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sid"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(sids, vec![c.as_str(), a.as_str()]);
    assert_eq!(page["page_size"], 50);
    assert!(page["next_page_uri"].is_null());

    let (_, page) = list(vec![("Status", "busy".into())]).await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 2);
    let (_, page) = list(vec![("Status", "completed".into())]).await;
    assert_eq!(page["calls"][0]["sid"], b.as_str());

    let today = f.twilio.shared.now().date_naive();
    let (_, page) = list(vec![("StartTime>", today.pred_opt().unwrap().to_string())]).await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 3);
    let (_, page) = list(vec![("StartTime<", today.pred_opt().unwrap().to_string())]).await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 0);

    let (_, page) = list(vec![("PageSize", "2".into())]).await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 2);
    let next = page["next_page_uri"].as_str().unwrap();
    let (_, page2) = f
        .send(f.http.get(format!("{}{next}", f.twilio.base_url())))
        .await;
    assert_eq!(page2["calls"].as_array().unwrap().len(), 1);
    assert_eq!(page2["page"], 1);
    assert!(page2["next_page_uri"].is_null());

    let (status, body) = list(vec![("PageSize", "0".into())]).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(20001)));
}

// ---- lifecycle and callbacks ---------------------------------------------------------------

#[tokio::test]
async fn status_callbacks_are_subscribed_numbered_and_signed() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", "<Response><Pause length=\"1\"/></Response>"),
            ("StatusCallback", &hooks.url("/status?lead=7")),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(call.status, "completed");
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));

    let got = hooks.at("/status");
    let statuses: Vec<&str> = got.iter().map(|r| r.param("CallStatus").unwrap()).collect();
    assert_eq!(
        statuses,
        vec!["initiated", "ringing", "in-progress", "completed"]
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert!(r.url.ends_with("/status?lead=7"));
        assert!(r.signed_correctly(f.twilio.auth_token()), "{r:?}");
        assert_eq!(r.param("SequenceNumber"), Some(i.to_string().as_str()));
        assert_eq!(r.param("CallSid"), Some(sid.as_str()));
        assert_eq!(r.param("AccountSid"), Some(f.twilio.account_sid()));
        assert_eq!(r.param("From"), Some(FROM));
        assert_eq!(r.param("To"), Some(SILENT));
        assert_eq!(r.param("ApiVersion"), Some("2010-04-01"));
        assert_eq!(r.param("Direction"), Some("outbound-api"));
        assert_eq!(r.param("CallbackSource"), Some("call-progress-events"));
        assert!(chrono::DateTime::parse_from_rfc2822(r.param("Timestamp").unwrap()).is_ok());
        assert_eq!(r.param("AnsweredBy"), None, "no AMD requested");
    }
    let done = &got[3];
    assert_eq!(done.param("SipResponseCode"), Some("200"));
    let secs: u64 = done.param("CallDuration").unwrap().parse().unwrap();
    assert!((1..=3).contains(&secs), "{secs}");
    assert_eq!(done.param("Duration"), Some("1"));

    let recorded: Vec<(String, Option<u32>, Option<u16>)> = call
        .callbacks
        .iter()
        .map(|c| (c.event.clone(), c.sequence_number, c.http_status))
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("initiated".into(), Some(0), Some(200)),
            ("ringing".into(), Some(1), Some(200)),
            ("in-progress".into(), Some(2), Some(200)),
            ("completed".into(), Some(3), Some(200)),
        ]
    );
}

#[tokio::test]
async fn busy_sends_only_the_default_completed_callback() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    let sid = f
        .place(&[
            ("To", BUSY),
            ("From", FROM),
            ("Twiml", "<Response/>"),
            ("StatusCallback", &hooks.url("/status")),
        ])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(call.status, "busy");
    assert_eq!(call.ended_by.as_deref(), Some("network"));
    let got = hooks.at("/status");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].param("CallStatus"), Some("busy"));
    assert_eq!(got[0].param("SequenceNumber"), Some("0"));
    assert_eq!(got[0].param("SipResponseCode"), Some("486"));
    assert!(got[0].signed_correctly(f.twilio.auth_token()));
    let (_, body) = f.fetch(&sid).await;
    assert_eq!(body["status"], "busy");
    assert!(body["duration"].is_null());
}

#[tokio::test]
async fn no_answer_rings_for_the_timeout() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    let began = std::time::Instant::now();
    let sid = f
        .place(&[
            ("To", NO_ANSWER),
            ("From", FROM),
            ("Twiml", "<Response/>"),
            ("Timeout", "5"),
            ("StatusCallback", &hooks.url("/status")),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "completed"),
        ])
        .await;
    let call = f.ended(&sid).await;
    let real = began.elapsed();
    assert_eq!(call.status, "no-answer");
    // 0.2 s queued + 5 s ringing, simulated.
    assert!(real >= SCALE.scale(Duration::from_millis(5200)), "{real:?}");
    assert!(real < Duration::from_secs(3), "{real:?}");
    let got = hooks.at("/status");
    let statuses: Vec<&str> = got.iter().map(|r| r.param("CallStatus").unwrap()).collect();
    assert_eq!(statuses, vec!["ringing", "no-answer"]);
    assert_eq!(got[1].param("SipResponseCode"), Some("487"));

    // A callee slower to pick up than the Timeout is a no-answer too.
    let sid = f
        .place(&[
            ("To", VOICEMAIL),
            ("From", FROM),
            ("Twiml", "<Response/>"),
            ("Timeout", "2"),
        ])
        .await;
    assert_eq!(f.ended(&sid).await.status, "no-answer");
}

#[tokio::test]
async fn busy_then_answers_on_the_second_attempt() {
    let f = fixture().await;
    let twiml = "<Response><Hangup/></Response>";
    let first = f
        .place(&[("To", BUSY_THEN_AGREES), ("From", FROM), ("Twiml", twiml)])
        .await;
    assert_eq!(f.ended(&first).await.status, "busy");
    let second = f
        .place(&[("To", BUSY_THEN_AGREES), ("From", FROM), ("Twiml", twiml)])
        .await;
    let call = f.ended(&second).await;
    assert_eq!(call.status, "completed");
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));
}

#[tokio::test]
async fn canceling_a_ringing_call() {
    let f = fixture().await;
    let sid = f
        .place(&[("To", NO_ANSWER), ("From", FROM), ("Twiml", "<Response/>")])
        .await;
    f.until(&sid, "ringing", |c| c.status == "ringing").await;
    let (status, body) = f.update(&sid, &[("Status", "canceled")]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceled")));
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));
}

#[tokio::test]
async fn twiml_from_url_is_fetched_signed_with_sync_amd() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    hooks.serve("/answer", "<Response><Say>Hello there.</Say></Response>");
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Url", &hooks.url("/answer")),
            ("MachineDetection", "Enable"),
            ("StatusCallback", &hooks.url("/status")),
        ])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(
        call.twiml.as_deref(),
        Some("<Response><Say>Hello there.</Say></Response>")
    );
    assert_eq!(call.answered_by.as_deref(), Some("unknown"));
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));
    let fetch = &hooks.at("/answer")[0];
    assert_eq!(fetch.method, "POST");
    assert!(fetch.signed_correctly(f.twilio.auth_token()));
    assert_eq!(fetch.param("CallStatus"), Some("in-progress"));
    assert_eq!(fetch.param("AnsweredBy"), Some("unknown"));
    assert_eq!(fetch.param("MachineDetectionDuration"), Some("5000"));
    assert_eq!(hooks.at("/status")[0].param("AnsweredBy"), Some("unknown"));

    // GET: the parameters travel in the query, which the signature covers.
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Url", &hooks.url("/answer")),
            ("Method", "GET"),
        ])
        .await;
    f.ended(&sid).await;
    let get = &hooks.at("/answer")[1];
    assert_eq!(get.method, "GET");
    assert!(get.url.contains("CallSid="));
    assert!(get.signed_correctly(f.twilio.auth_token()));
}

#[tokio::test]
async fn async_amd_posts_the_verdict() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", VOICEMAIL),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
            ("MachineDetection", "Enable"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", &hooks.url("/amd")),
        ])
        .await;
    // Async AMD does not hold up the stream.
    let mut conn = server.accept().await;
    conn.handshake().await;
    let call = f
        .until(&sid, "AMD verdict", |c| !c.amd_callbacks.is_empty())
        .await;
    assert_eq!(call.answered_by.as_deref(), Some("machine_start"));
    let amd = &hooks.at("/amd")[0];
    assert!(amd.signed_correctly(f.twilio.auth_token()));
    let mut keys: Vec<&str> = amd.params.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "AccountSid",
            "AnsweredBy",
            "CallSid",
            "MachineDetectionDuration"
        ]
    );
    assert_eq!(amd.param("AnsweredBy"), Some("machine_start"));
    f.update(&sid, &[("Status", "completed")]).await;
    f.ended(&sid).await;
}

#[tokio::test]
async fn malformed_twiml_is_an_application_error() {
    let f = fixture().await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", "<Response><Say>unclosed</Response>"),
        ])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(call.status, "completed");
    assert_eq!(call.ended_by.as_deref(), Some("application-error"));
    assert!(
        call.errors.iter().any(|e| e.starts_with("12100 ")),
        "{:?}",
        call.errors
    );
}

#[tokio::test]
async fn time_limit_ends_the_call() {
    let f = fixture().await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", "<Response><Pause length=\"600\"/></Response>"),
            ("TimeLimit", "2"),
        ])
        .await;
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("time-limit"));
    assert_eq!(call.status, "completed");
}

// ---- media streams -------------------------------------------------------------------------

#[tokio::test]
async fn stream_speaks_the_protocol_exactly() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let hooks = Hooks::start().await;
    let url = server.url();
    let twiml = format!(
        r#"<Response><Connect><Stream url="{url}" name="agent" statusCallback="{}"><Parameter name="session" value="s&amp;1"/><Parameter name="lead" value="42"/></Stream></Connect></Response>"#,
        hooks.url("/stream")
    );
    let sid = f
        .place(&[("To", SILENT), ("From", FROM), ("Twiml", &twiml)])
        .await;
    let mut conn = server.accept().await;
    assert!(is_signed(
        f.twilio.auth_token(),
        &url,
        &[],
        conn.signature.as_deref()
    ));
    assert_eq!(
        conn.next().await.unwrap(),
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = conn.next().await.unwrap();
    let stream_sid = start["streamSid"].as_str().unwrap().to_string();
    assert!(stream_sid.len() == 34 && stream_sid.starts_with("MZ"));
    assert_eq!(
        start,
        json!({
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": f.twilio.account_sid(),
                "streamSid": stream_sid,
                "callSid": sid,
                "tracks": ["inbound"],
                "customParameters": {"session": "s&1", "lead": "42"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        })
    );
    for n in 1..=20u64 {
        let m = conn.next().await.unwrap();
        let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["event", "media", "sequenceNumber", "streamSid"]);
        assert_eq!(m["event"], "media");
        assert_eq!(m["sequenceNumber"], (n + 1).to_string());
        assert_eq!(m["streamSid"], stream_sid.as_str());
        assert_eq!(m["media"]["track"], "inbound");
        assert_eq!(m["media"]["chunk"], n.to_string());
        assert_eq!(m["media"]["timestamp"], ((n - 1) * 20).to_string());
        assert_eq!(
            payload(&m),
            vec![speech::SILENCE; 160],
            "the silent persona"
        );
    }
    let record = f.twilio.call(&sid).unwrap().stream.unwrap();
    assert_eq!(record.url, url);
    assert_eq!(record.handshake_status, Some(101));
    assert_eq!(record.stream_sid.as_deref(), Some(stream_sid.as_str()));
    assert_eq!(
        record.custom_parameters.get("session").map(String::as_str),
        Some("s&1")
    );

    // Hang up through the API: `stop`, then the socket closes.
    let (status, body) = f.update(&sid, &[("Status", "completed")]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
    let (stop, media) = conn.next_non_media().await;
    let stop = stop.unwrap();
    let last_seq: u64 = media.last().map_or(21, |m| {
        m["sequenceNumber"].as_str().unwrap().parse().unwrap()
    });
    assert_eq!(
        stop,
        json!({
            "event": "stop",
            "sequenceNumber": (last_seq + 1).to_string(),
            "stop": {"accountSid": f.twilio.account_sid(), "callSid": sid},
            "streamSid": stream_sid,
        })
    );
    assert_eq!(conn.next().await, None, "socket closed after stop");
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));
    assert!(!call.stream.as_ref().unwrap().closed_by_server);

    let events: Vec<String> = call
        .stream
        .unwrap()
        .status_callbacks
        .iter()
        .map(|c| c.event.clone())
        .collect();
    assert_eq!(events, vec!["stream-started", "stream-stopped"]);
    let started = &hooks.at("/stream")[0];
    assert!(started.signed_correctly(f.twilio.auth_token()));
    assert_eq!(started.param("StreamName"), Some("agent"));
    assert_eq!(started.param("StreamSid"), Some(stream_sid.as_str()));
}

#[tokio::test]
async fn marks_echo_after_playback_and_clear_flushes_them() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    let ss = conn.handshake().await;

    // Nothing buffered: the echo comes back at once.
    conn.send_mark(&ss, "now").await;
    let (echo, _) = conn.next_non_media().await;
    let echo = echo.unwrap();
    assert_eq!(echo["event"], "mark");
    assert_eq!(echo["mark"], json!({"name": "now"}));
    assert_eq!(echo["streamSid"], ss.as_str());
    assert!(echo["sequenceNumber"].is_string());

    // 200 ms of audio: the mark comes back once it has played, ten frames later.
    let sent: Vec<u8> = (0..1600u32).map(|i| (i % 251) as u8).collect();
    conn.send_audio(&ss, &sent).await;
    conn.send_mark(&ss, "after-200ms").await;
    let (echo, media) = conn.next_non_media().await;
    assert_eq!(echo.unwrap()["mark"]["name"], "after-200ms");
    assert!(media.len() >= 10, "echoed after {} frames", media.len());

    // Ten seconds of audio (500 frames), a mark, then clear: the pending mark is echoed on
    // the clear, long before the audio could have played.
    conn.send_audio(&ss, &speech::silence(10_000)).await;
    conn.send_mark(&ss, "pending").await;
    conn.send_json(json!({"event": "clear", "streamSid": ss}))
        .await;
    let (echo, media) = conn.next_non_media().await;
    assert_eq!(echo.unwrap()["mark"]["name"], "pending");
    assert!(media.len() < 250, "echoed after {} frames", media.len());

    let record = f.twilio.call(&sid).unwrap().stream.unwrap();
    let mut expected = sent.clone();
    expected.extend(speech::silence(10_000));
    assert_eq!(record.audio_received, expected);
    assert_eq!(record.marks_received, vec!["now", "after-200ms", "pending"]);
    assert_eq!(record.marks_echoed, vec!["now", "after-200ms", "pending"]);
    assert_eq!(record.clears, 1);
    assert!(record.rejected.is_empty());
    f.update(&sid, &[("Status", "completed")]).await;
}

#[tokio::test]
async fn invalid_messages_are_rejected_not_fatal() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    let ss = conn.handshake().await;
    conn.ws
        .send(Message::binary(vec![0xFFu8; 160]))
        .await
        .unwrap();
    for bad in [
        "{not json".to_string(),
        json!({"event": "dtmf", "streamSid": ss, "dtmf": {"digit": "1"}}).to_string(),
        json!({"event": "clear", "streamSid": "MZ00000000000000000000000000000000"}).to_string(),
        json!({"event": "media", "streamSid": ss, "media": {"payload": "//8=", "track": "outbound"}}).to_string(),
        json!({"event": "media", "streamSid": ss, "media": {"payload": "not base64!"}}).to_string(),
        json!({"event": "mark", "streamSid": ss, "mark": {"name": "x"}, "sequenceNumber": "1"}).to_string(),
    ] {
        conn.ws.send(Message::text(bad)).await.unwrap();
    }
    // Still working.
    conn.send_mark(&ss, "alive").await;
    let (echo, _) = conn.next_non_media().await;
    assert_eq!(echo.unwrap()["mark"]["name"], "alive");
    let record = f.twilio.call(&sid).unwrap().stream.unwrap();
    assert_eq!(record.rejected.len(), 7, "{:#?}", record.rejected);
    assert!(record.rejected[0].starts_with("31950 "));
    assert!(record.rejected[1..].iter().all(|r| r.starts_with("31951 ")));
    assert!(record.audio_received.is_empty());
    f.update(&sid, &[("Status", "completed")]).await;
}

#[tokio::test]
async fn callee_speech_is_decodable_in_inbound_media() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", VOICEMAIL),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    conn.handshake().await;
    let mut frames = Vec::new();
    while !utterances(&frames).contains(&"beep".to_string()) {
        frames.push(conn.next().await.unwrap());
    }
    let said = utterances(&frames);
    // The greeting starts at pickup, a moment before the stream is up; its end and the beep
    // arrive whole.
    assert!(said.ends_with(&["beep".to_string()]), "{said:?}");
    let call = f.twilio.call(&sid).unwrap();
    assert!(call.stream.unwrap().said.contains(&"beep".to_string()));
    f.update(&sid, &[("Status", "completed")]).await;
}

#[tokio::test]
async fn callee_hears_the_agent_and_answers() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", AGREES),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    let ss = conn.handshake().await;
    let greeting = "Hi, this is the clinic calling to confirm your appointment tomorrow at ten.";
    let audio = speech::encode(greeting);
    conn.send_audio(&ss, &audio).await;
    conn.send_mark(&ss, "greeting-done").await;

    let mut frames = Vec::new();
    let mut marked_at = None;
    loop {
        let m = conn.next().await.unwrap();
        match m["event"].as_str() {
            Some("mark") => marked_at = Some(frames.len()),
            Some("media") => frames.push(m),
            other => panic!("unexpected {other:?}"),
        }
        if utterances(&frames).len() == 1 {
            break;
        }
    }
    assert_eq!(
        utterances(&frames),
        vec!["Yes, that works for me. I'll be there."]
    );
    // The reply started only after the greeting played out (its mark) and a pause.
    let marked_at = marked_at.expect("greeting mark echoed before the reply");
    let first_loud = frames
        .iter()
        .position(|m| speech::energy(&payload(m)) > 1000)
        .unwrap();
    assert!(
        first_loud > marked_at + 20,
        "reply at frame {first_loud}, mark at {marked_at}"
    );

    let record = f.twilio.call(&sid).unwrap().stream.unwrap();
    assert_eq!(record.heard, vec![greeting.to_string()]);
    assert_eq!(record.audio_received, audio);
    assert_eq!(
        record.said,
        vec!["Yes, that works for me. I'll be there.".to_string()]
    );
    f.update(&sid, &[("Status", "completed")]).await;
}

#[tokio::test]
async fn callee_hangs_up_mid_greeting() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let hooks = Hooks::start().await;
    let sid = f
        .place(&[
            ("To", HANGS_UP),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
            ("StatusCallback", &hooks.url("/status")),
        ])
        .await;
    let mut conn = server.accept().await;
    let ss = conn.handshake().await;
    conn.send_audio(
        &ss,
        &speech::encode("Hello! I am calling from the clinic about your visit."),
    )
    .await;
    let (stop, _) = conn.next_non_media().await;
    assert_eq!(stop.unwrap()["event"], "stop");
    assert_eq!(conn.next().await, None);
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("callee"));
    assert_eq!(call.status, "completed");
    let stream = call.stream.unwrap();
    assert!(stream.heard.is_empty(), "hung up mid-utterance");
    assert_eq!(
        hooks.at("/status")[0].param("CallStatus"),
        Some("completed")
    );
}

#[tokio::test]
async fn server_close_continues_with_the_next_verb() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "<Say>Goodbye.</Say>")),
        ])
        .await;
    let mut conn = server.accept().await;
    conn.handshake().await;
    conn.ws.close(None).await.unwrap();
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("twiml"), "{call:#?}");
    assert!(call.stream.as_ref().unwrap().closed_by_server);

    // With nothing after <Connect>, the call ends.
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    conn.handshake().await;
    drop(conn);
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("stream-closed"));
    assert_eq!(call.status, "completed");
}

#[tokio::test]
async fn refused_handshakes_and_bad_urls_fail_the_stream_only() {
    let f = fixture().await;
    let server = MediaServer::start(Some(403)).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            (
                "Twiml",
                &twiml_stream(&server.url(), "<Pause length=\"1\"/>"),
            ),
        ])
        .await;
    let call = f.ended(&sid).await;
    let stream = call.stream.as_ref().unwrap();
    assert_eq!(stream.handshake_status, Some(403));
    assert!(
        call.errors.iter().any(|e| e.starts_with("31920 ")),
        "{:?}",
        call.errors
    );
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));

    for (url, code) in [
        (format!("{}?lead=1", server.url()), "31920 "),
        ("ws://example.com/media".to_string(), "31920 "),
        ("wss://example.com/media".to_string(), "31910 "),
    ] {
        let sid = f
            .place(&[
                ("To", SILENT),
                ("From", FROM),
                ("Twiml", &twiml_stream(&url, "")),
            ])
            .await;
        let call = f.ended(&sid).await;
        assert_eq!(call.stream.as_ref().unwrap().handshake_status, None);
        assert!(
            call.errors.iter().any(|e| e.starts_with(code)),
            "{url}: {:?}",
            call.errors
        );
    }
}

#[tokio::test]
async fn redirect_replaces_the_running_twiml() {
    let f = fixture().await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            ("Twiml", &twiml_stream(&server.url(), "")),
        ])
        .await;
    let mut conn = server.accept().await;
    conn.handshake().await;
    let (status, _) = f
        .update(
            &sid,
            &[(
                "Twiml",
                "<Response><Say>Transferring you now.</Say></Response>",
            )],
        )
        .await;
    assert_eq!(status, 200);
    let (stop, _) = conn.next_non_media().await;
    assert_eq!(stop.unwrap()["event"], "stop");
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));
    assert_eq!(
        call.twiml.as_deref(),
        Some("<Response><Say>Transferring you now.</Say></Response>")
    );
}

// ---- faults --------------------------------------------------------------------------------

#[tokio::test]
async fn five_hundreds_carry_twilio_bodies_and_process_nothing() {
    let f = fixture().await;
    f.twilio
        .fail_next(Requests::Creates, 1, RestFault::InternalError);
    f.twilio
        .fail_next(Requests::Creates, 1, RestFault::Unavailable);
    // Other requests are not the creates' faults.
    let (status, _) = f.send(f.http.get(f.calls_url())).await;
    assert_eq!(status, 200);
    let params = [("To", SILENT), ("From", FROM), ("Twiml", "<Response/>")];
    let (status, body) = f.create(&params).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"code": 20500, "message": "Internal Server Error", "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500})
    );
    let (status, body) = f.create(&params).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"code": 20503, "message": "Service Unavailable", "more_info": "https://www.twilio.com/docs/errors/20503", "status": 503})
    );
    assert!(
        f.twilio.calls().is_empty(),
        "a refused create places no call"
    );
    f.place(&params).await;
    let reqs = f.twilio.requests();
    let faults: Vec<_> = reqs.iter().map(|r| (r.status, r.fault)).collect();
    assert_eq!(
        faults,
        vec![
            (200, None),
            (500, Some(RestFault::InternalError)),
            (503, Some(RestFault::Unavailable)),
            (201, None),
        ]
    );
    // Unauthenticated requests are refused as always, and take no fault.
    f.twilio
        .fail_next(Requests::Any, 1, RestFault::InternalError);
    let anonymous = f.http.get(f.calls_url()).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(f.fetch(&reqs[3].call_sid.clone().unwrap()).await.0, 500);
}

#[tokio::test]
async fn an_outage_answers_every_request_503_until_it_is_over() {
    let f = fixture().await;
    // One simulated minute: three seconds here.
    f.twilio.unavailable_for(Duration::from_secs(60));
    let params = [("To", SILENT), ("From", FROM), ("Twiml", "<Response/>")];
    assert_eq!(f.create(&params).await.0, 503);
    assert_eq!(f.send(f.http.get(f.calls_url())).await.0, 503);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while f.send(f.http.get(f.calls_url())).await.0 == 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outage never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f.twilio.calls().is_empty());
    f.place(&params).await;
}

#[tokio::test]
async fn a_hung_request_gets_no_answer_whether_or_not_it_was_processed() {
    let f = fixture().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let params = [
        ("To", AGREES),
        ("From", FROM),
        ("Twiml", "<Response><Pause length=\"60\"/></Response>"),
    ];
    let create = || {
        impatient
            .post(f.calls_url())
            .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
            .form(&params)
            .send()
    };

    f.twilio.fail_next(Requests::Creates, 1, RestFault::Hang);
    let err = create().await.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(f.twilio.calls().is_empty(), "not processed");

    f.twilio
        .fail_next(Requests::Creates, 1, RestFault::HangAfterProcessing);
    let err = create().await.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    let calls = f.twilio.calls();
    assert_eq!(calls.len(), 1, "processed: the call was placed");
    f.until(&calls[0].sid, "the call rings", |c| c.status != "queued")
        .await;

    let reqs = f.twilio.requests();
    assert_eq!(
        reqs.iter().map(|r| (r.status, r.fault)).collect::<Vec<_>>(),
        vec![
            (0, Some(RestFault::Hang)),
            (0, Some(RestFault::HangAfterProcessing))
        ]
    );
    assert!(
        reqs.iter().all(|r| r.error_code.is_none()),
        "nothing was answered"
    );
    assert_eq!(reqs[1].call_sid.as_deref(), Some(calls[0].sid.as_str()));
    // The rules are used up: the API answers again.
    assert_eq!(f.fetch(&calls[0].sid).await.0, 200);
}

#[tokio::test]
async fn an_unreadable_create_answer_still_places_a_ringing_call() {
    let f = fixture().await;
    f.twilio
        .fail_next(Requests::Creates, 1, RestFault::UnreadableBody);
    let resp = f
        .http
        .post(f.calls_url())
        .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
        .form(&[
            ("To", AGREES),
            ("From", FROM),
            ("Twiml", "<Response><Pause length=\"60\"/></Response>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with('{'), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let calls = f.twilio.calls();
    assert_eq!(calls.len(), 1);
    f.until(&calls[0].sid, "the call is answered", |c| {
        c.status == "in-progress"
    })
    .await;
    assert_eq!(
        f.twilio.requests()[0].call_sid.as_deref(),
        Some(calls[0].sid.as_str())
    );
}

#[tokio::test]
async fn a_stalled_call_stays_in_progress_after_the_stream_closes_until_hung_up() {
    let f = fixture_with(FakeTwilioConfig {
        stream_close: StreamCloseMode::Stall,
        ..FakeTwilioConfig::default()
    })
    .await;
    let mut server = MediaServer::start(None).await;
    let sid = f
        .place(&[
            ("To", SILENT),
            ("From", FROM),
            (
                "Twiml",
                &twiml_stream(&server.url(), "<Say>Goodbye.</Say><Hangup/>"),
            ),
        ])
        .await;
    let mut conn = server.accept().await;
    conn.handshake().await;
    conn.ws.close(None).await.unwrap();
    f.until(&sid, "the server's close is seen", |c| {
        c.stream.as_ref().is_some_and(|s| s.closed_by_server)
    })
    .await;
    // Ten simulated seconds: "Goodbye." would have been said and the call hung up by now.
    tokio::time::sleep(SCALE.scale(Duration::from_secs(10))).await;
    let (status, body) = f.fetch(&sid).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("in-progress"))
    );
    let (status, body) = f.update(&sid, &[("Status", "completed")]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
    let call = f.ended(&sid).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));
}

// ---- inbound calls ---------------------------------------------------------------------------

#[tokio::test]
async fn a_rung_number_asks_its_voice_url_while_ringing_and_tells_its_status_callback_the_end() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    hooks.serve("/voice", "<Response><Say>Hello there.</Say></Response>");
    let sid = f
        .twilio
        .ring(super::Incoming {
            url: hooks.url("/voice"),
            from: "+12025550109".into(),
            to: None,
            status_callback: Some(hooks.url("/status")),
        })
        .unwrap();
    let call = f.twilio.wait_ended(&sid).await.unwrap();
    assert_eq!(
        (
            call.direction.as_str(),
            call.to.as_str(),
            call.from.as_str()
        ),
        ("inbound", FROM, "+12025550109")
    );
    assert_eq!(
        (call.status.as_str(), call.ended_by.as_deref()),
        ("completed", Some("twiml"))
    );
    let fetch = &hooks.at("/voice")[0];
    assert_eq!(fetch.method, "POST");
    assert!(fetch.signed_correctly(f.twilio.auth_token()));
    for (name, value) in [
        ("CallSid", sid.as_str()),
        ("AccountSid", f.twilio.account_sid()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+12025550109"),
        ("To", FROM),
        ("ApiVersion", "2010-04-01"),
    ] {
        assert_eq!(fetch.param(name), Some(value), "{name}");
    }
    // The number's status callback subscribes to the end only.
    let status = hooks.at("/status");
    assert_eq!(status.len(), 1);
    assert!(status[0].signed_correctly(f.twilio.auth_token()));
    assert_eq!(status[0].param("CallStatus"), Some("completed"));
    assert_eq!(status[0].param("Direction"), Some("inbound"));
    assert!(status[0].param("CallDuration").is_some());
    // The resource says which way the call went.
    let (_, body) = f.fetch(&sid).await;
    assert_eq!(body["direction"], "inbound");
}

#[tokio::test]
async fn ringing_from_another_process_waits_for_the_end_and_refuses_bad_requests() {
    let f = fixture().await;
    let hooks = Hooks::start().await;
    hooks.serve("/voice", "<Response><Say>Hi.</Say><Hangup/></Response>");
    let url = format!("{}{}", f.twilio.base_url(), super::RING_PATH);
    // `send` signs in with the account's credentials.
    let ring = |form: Vec<(&'static str, String)>| f.http.post(&url).form(&form);
    let (status, body) = f
        .send(ring(vec![
            ("Url", hooks.url("/voice")),
            ("From", "+12025550100".into()),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["ended_by"], "twiml");
    assert_eq!(body["stream_opened"], false);
    assert!(body["twiml"].as_str().unwrap().contains("<Say>Hi.</Say>"));
    let anonymous = f
        .http
        .post(&url)
        .form(&[("Url", hooks.url("/voice"))])
        .basic_auth(f.twilio.account_sid(), Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, body) = f.send(ring(vec![("Url", "not a url".into())])).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = f
        .send(ring(vec![
            ("Url", hooks.url("/voice")),
            ("To", "+12025550100".into()),
        ]))
        .await;
    assert_eq!(status, 400, "a number the account does not own: {body}");
}
