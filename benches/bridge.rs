//! How much one bridged call costs: pushes simulated 20 ms frames through `call::bridge::run`
//! over in-memory channels (both directions, as on a live call) and reports frames per second
//! of one core. A live call needs 50 frames/s each way; the figure says how many calls one core
//! could carry on bridging alone. Run: `cargo bench --bench bridge`; add `record` to record
//! the call as `--record` does (the WAV writer shares the one core; the file goes to a
//! temporary folder).

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use dialer::agent::config::AgentConfig;
use dialer::call::bridge::{self, BridgeSetup};
use dialer::call::tools::NoTools;
use dialer::ws::Frame;
use futures_util::{Sink, Stream};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type In = Pin<Box<dyn Stream<Item = Frame> + Send>>;
type Out = Pin<Box<dyn Sink<Frame, Error = ()> + Send>>;

fn leg() -> (
    mpsc::UnboundedSender<Frame>,
    In,
    mpsc::UnboundedReceiver<Frame>,
    Out,
) {
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Frame>();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Frame>();
    let stream =
        futures_util::stream::unfold(
            in_rx,
            |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
        );
    let sink = futures_util::sink::unfold(out_tx, |tx, f: Frame| async move {
        tx.send(f).map_err(|_| ())?;
        Ok::<_, ()>(tx)
    });
    (in_tx, Box::pin(stream), out_rx, Box::pin(sink))
}

fn main() {
    let frames: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(200_000);
    let record = std::env::args().any(|a| a == "record");
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("CAbench.wav");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (t_tx, mut t_in, mut t_rx, mut t_out) = leg();
        let (a_tx, mut a_in, mut a_rx, mut a_out) = leg();
        let (ev_tx, _ev_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let agent = AgentConfig::default();
        let c = cancel.clone();
        let (recorder, writing) = match record {
            true => {
                let (r, w) = dialer::recording::recorder::start(wav.clone());
                (Some(r), Some(w))
            }
            false => (None, None),
        };
        let bridge = tokio::spawn(async move {
            let setup = BridgeSetup {
                to: "+12025550100",
                stream_sid: "MZ00000000000000000000000000000000",
                agent: &agent,
                tools: &NoTools,
                answered_at: Instant::now(),
                setup_timeout: Duration::from_secs(5),
                mark_timeout: Duration::from_secs(5),
                deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
                agent_silence: Duration::from_secs(3600),
                recorder: recorder.as_ref(),
                verdicts: dialer::call::voicemail::Verdicts::none(),
                span: tracing::Span::none(),
            };
            bridge::run(
                &mut t_in,
                &mut t_out,
                &mut a_in,
                &mut a_out,
                &mut bridge::NoReconnect,
                &setup,
                &ev_tx,
                &c,
            )
            .await
        });
        let _update = a_rx.recv().await;
        a_tx.send(Frame::text(r#"{"type":"session.ready","session_id":"sess_bench"}"#.into())).unwrap();
        // Let the bridge see session.ready before audio starts.
        tokio::time::sleep(Duration::from_millis(50)).await;

        // 160 μ-law bytes in base64, as Twilio and the agent send them.
        let payload = "f".repeat(216);
        let twilio_frame = |n: usize| {
            Bytes::from(format!(
                r#"{{"event":"media","sequenceNumber":"2","media":{{"track":"inbound","chunk":"1","timestamp":"{}","payload":"{payload}"}},"streamSid":"MZ00000000000000000000000000000000"}}"#,
                20 * n
            ))
        };
        // A recording places each frame by its timestamp, so they must move on; without one
        // the same frame will do (and the loop makes nothing).
        let twilio_frames: Vec<Bytes> = match record {
            true => (0..frames).map(twilio_frame).collect(),
            false => vec![twilio_frame(1)],
        };
        let agent_frame = Bytes::from(format!(
            r#"{{"type":"reply.audio","reply_id":"resp_00000000000000000000000000000000","data":"{payload}","timestamp":1790461856.25}}"#
        ));
        let started = Instant::now();
        for n in 0..frames {
            let twilio_frame = &twilio_frames[n % twilio_frames.len()];
            t_tx.send(Frame::Text(twilio_frame.clone())).unwrap();
            a_tx.send(Frame::Text(agent_frame.clone())).unwrap();
            // Keep the queues short, as a real socket would.
            let _ = a_rx.recv().await;
            let _ = t_rx.recv().await;
        }
        cancel.cancel();
        let _ = bridge.await;
        // The recording is part of the cost: the file is complete before the clock stops.
        let recorded = match writing {
            Some(w) => Some(w.finish().await.unwrap()),
            None => None,
        };
        let elapsed = started.elapsed();
        let per_sec = (2 * frames) as f64 / elapsed.as_secs_f64();
        println!(
            "bridge: {} frames each way in {:.3} s: {:.0} frames/s on one core, {:.2} µs per frame; \
             a call needs 100 frames/s (50 each way), so bridging alone would carry ≈ {:.0} calls per core",
            frames,
            elapsed.as_secs_f64(),
            per_sec,
            1e6 / per_sec,
            per_sec / 100.0
        );
        if let Some(r) = recorded {
            let size = std::fs::metadata(&wav).map(|m| m.len()).unwrap_or(0);
            println!(
                "recorded: {} frames dropped, {:.1} MB written",
                r.frames_dropped,
                size as f64 / 1e6
            );
        }
    });
}
