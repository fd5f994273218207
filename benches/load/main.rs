//! A thousand live calls on one machine: the whole dialer, as a separate process, placing N
//! calls at once through a campaign and bridging each call's Media Stream (50 frames/s each
//! way) to a Voice Agent session, all on loopback.
//!
//! The generator in this process plays both services: Twilio (the REST API, signed status
//! callbacks, the signed Media Stream with the call's token, `twilio.rs`) and an echo Voice
//! Agent (`agent.rs`). Every frame the callee sends carries its call, its number and the time
//! it left, so when the agent's echo comes back through the dialer the generator knows the
//! round trip Twilio → bridge → agent → bridge → Twilio and whether any bit changed.
//!
//! Per N it reports: live calls held through the measured window, frames lost and corrupted,
//! the round trip's p50/p99/p99.9, the dialer's CPU (core-seconds per call-second) and memory
//! (RSS per call above the idle dialer) from its /proc entries, and the time from the stream's
//! `start` to the agent's first audio. The generator's own CPU is shown beside the dialer's.
//!
//! Run: `cargo bench --bench load` (N = 50, 200, 500, 1000; 20 s measured each), or
//! `cargo bench --bench load -- 200 1000 --secs 10` for other sizes and windows. More options:
//! `--dialer PATH` measures another build of the dialer, `--env NAME=VALUE` sets a variable in
//! its environment (`TOKIO_WORKER_THREADS=1`), `--threads 1` runs the generator on one thread.
//! Under `cargo test` it runs three calls for one second as a smoke test.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

mod agent;
mod audio;
mod twilio;
mod wire;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Options {
    sizes: Vec<usize>,
    secs: u64,
    dialer: PathBuf,
    /// Extra environment for the dialer (`--env TOKIO_WORKER_THREADS=1`).
    env: Vec<(String, String)>,
    /// Generator threads: 1 (both services on one) or 2 (one each).
    threads: usize,
    smoke: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut sizes = Vec::new();
    let mut secs = None;
    let mut dialer = None;
    let mut env = Vec::new();
    let mut threads = 2;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()),
            "--dialer" => dialer = it.next().map(PathBuf::from),
            "--threads" => threads = it.next().and_then(|s| s.parse().ok()).unwrap_or(2),
            "--env" => env.extend(
                it.next()
                    .and_then(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            other => sizes.extend(other.parse::<usize>().ok()),
        }
    }
    if sizes.is_empty() {
        sizes = if smoke {
            vec![3]
        } else {
            vec![50, 200, 500, 1000]
        };
    }
    Options {
        sizes,
        secs: secs.unwrap_or(if smoke { 1 } else { 20 }),
        // The dialer runs in a temporary folder: a relative path would be read from there.
        dialer: dialer
            .and_then(|d| std::path::absolute(d).ok())
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dialer"))),
        env,
        threads,
        smoke,
    }
}

fn main() {
    wire::self_check();
    audio::self_check();
    let opts = options();
    println!(
        "dialer: {}\nmeasured window: {} s per size; load average before: {}",
        opts.dialer.display(),
        opts.secs,
        loadavg()
    );
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        match round(n, &opts) {
            Ok(row) => {
                row.print_details();
                rows.push(row);
            }
            Err(e) => {
                println!("N = {n}: {e}");
                if opts.smoke {
                    std::process::exit(1);
                }
            }
        }
    }
    println!();
    Row::print_table(&rows);
    if opts.smoke {
        let ok = rows.iter().all(|r| {
            r.held == r.n && r.lost == 0 && r.corrupted == 0 && r.duplicates == 0 && r.rtts > 0
        });
        assert!(ok, "the smoke run did not carry every frame of every call");
    }
}

/// One size's figures.
struct Row {
    n: usize,
    held: usize,
    dropped: usize,
    sent: u64,
    lost: u64,
    corrupted: u64,
    duplicates: u64,
    early: u64,
    backpressure: u64,
    rtts: usize,
    rtt: [f64; 4],
    first_audio: [f64; 3],
    ramp_secs: f64,
    secs: f64,
    dialer_cpu: f64,
    dialer_sys: f64,
    generator_cpu: f64,
    /// CPU time the rest of the machine used meanwhile (other people's builds and tests).
    others_cpu: f64,
    idle_rss_kib: u64,
    rss_kib: u64,
    loadavg: String,
    errors: Vec<String>,
    exit: String,
}

impl Row {
    fn cpu_per_call_sec(cpu: f64, n: usize, secs: f64) -> f64 {
        cpu / (n as f64 * secs)
    }

    fn print_table(rows: &[Row]) {
        println!(
            "| N | held | lost | corrupt | RTT p50 | p99 | p99.9 | max | dialer CPU, core-s per call-s (kernel) | RSS per call | start → agent audio p50 / p99 | generator CPU, core-s per call-s | others, cores |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.6} ({:.0} %) | {:.1} KiB | {} / {} | {:.6} | {:.2} |",
                r.n,
                r.held,
                r.lost,
                r.corrupted + r.duplicates,
                ms(r.rtt[0]),
                ms(r.rtt[1]),
                ms(r.rtt[2]),
                ms(r.rtt[3]),
                Self::cpu_per_call_sec(r.dialer_cpu, r.held.max(1), r.secs),
                100.0 * r.dialer_sys / r.dialer_cpu.max(1e-9),
                r.rss_kib.saturating_sub(r.idle_rss_kib) as f64 / r.held.max(1) as f64,
                ms(r.first_audio[0]),
                ms(r.first_audio[1]),
                Self::cpu_per_call_sec(r.generator_cpu, r.held.max(1), r.secs),
                r.others_cpu.max(0.0) / r.secs,
            );
        }
    }

    fn print_details(&self) {
        println!(
            "N = {}: {} calls held ({} dropped), ramp {:.1} s, window {:.1} s; frames sent {}, \
             lost {}, corrupted {}, duplicated {}, echoed before the agent was ready {}; \
             socket backpressure {} times; {} round trips measured, p50 {} p99 {} p99.9 {} max {}; \
             start → first agent audio p50 {} p99 {} max {}; dialer CPU {:.2} s ({:.2} s in the \
             kernel), generator CPU {:.2} s, everything else on the machine {:.2} s; dialer RSS idle {} KiB, live {} KiB; load average {}; dialer exit: {}",
            self.n,
            self.held,
            self.dropped,
            self.ramp_secs,
            self.secs,
            self.sent,
            self.lost,
            self.corrupted,
            self.duplicates,
            self.early,
            self.backpressure,
            self.rtts,
            ms(self.rtt[0]),
            ms(self.rtt[1]),
            ms(self.rtt[2]),
            ms(self.rtt[3]),
            ms(self.first_audio[0]),
            ms(self.first_audio[1]),
            ms(self.first_audio[2]),
            self.dialer_cpu,
            self.dialer_sys,
            self.generator_cpu,
            self.others_cpu.max(0.0),
            self.idle_rss_kib,
            self.rss_kib,
            self.loadavg,
            self.exit,
        );
        for e in &self.errors {
            println!("  error: {e}");
        }
    }
}

fn ms(ns: f64) -> String {
    if ns.is_nan() {
        "–".into()
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// The values at the given quantiles of sorted samples, in nanoseconds.
fn quantiles<const K: usize>(sorted: &[u64], q: [f64; K]) -> [f64; K] {
    q.map(|q| {
        if sorted.is_empty() {
            f64::NAN
        } else {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i] as f64
        }
    })
}

/// A running part of the generator: a thread with its own single-threaded runtime, so the
/// generator never shares a task between threads; it stops when dropped.
struct Service {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Run `start` on a new thread; what it returns once started comes back with the service.
    fn start<T, F, Fut>(name: &str, start: F) -> std::io::Result<(Self, T)>
    where
        T: Send + 'static,
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<T>>,
    {
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let started = start(token.clone()).await;
                    let ok = started.is_ok();
                    let _ = tx.send(started);
                    if ok {
                        token.cancelled().await;
                    }
                });
            })?;
        let value = rx
            .recv()
            .map_err(|_| std::io::Error::other("the service thread died"))??;
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            value,
        ))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the echo agent on the current runtime.
async fn start_agent(
    shared: Arc<agent::AgentShared>,
    stop: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(agent::serve(listener, shared, stop));
    Ok(addr)
}

/// The dialer's process, killed if the round ends before it does.
struct Dialer {
    child: Child,
    dir: PathBuf,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Dialer {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!("{s} (stderr: {})", self.stderr_tail()))
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

fn campaign_files(dir: &Path, n: usize) -> std::io::Result<PathBuf> {
    let csv = dir.join("leads.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    writeln!(f, "phone,first_name")?;
    for i in 0..n {
        // +1 202 2xx xxxx: valid North American numbers, none of them N11 or premium.
        writeln!(f, "+1202{:07},Lead{i}", 2_000_000 + i)?;
    }
    f.flush()?;
    std::fs::write(
        dir.join("leads.toml"),
        format!(
            r#"[agent]
system_prompt = "A load test: the agent only echoes."
greeting = "Hello {{{{first_name}}}}, this is an automated load test call."

[campaign]
name = "load bench"
concurrency = {n}
calls_per_second = 1000
ring_timeout = 15
time_limit = 600
amd = false
timezone = "America/New_York"

[window]
hours = "00:00-24:00"
days = ["mon-sun"]
"#
        ),
    )?;
    Ok(csv)
}

fn spawn_dialer(
    opts: &Options,
    dir: &Path,
    csv: &Path,
    twilio: std::net::SocketAddr,
    agent: std::net::SocketAddr,
) -> std::io::Result<Dialer> {
    let child = Command::new(&opts.dialer)
        .arg("campaign")
        .arg(csv)
        .arg("--json")
        .current_dir(dir)
        // Nothing from the environment this runs in: no PUBLIC_URL (a Twilio on loopback may
        // reach the server directly), no .env, no RUST_LOG.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TWILIO_ACCOUNT_SID", twilio::ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", twilio::AUTH_TOKEN)
        .env("TWILIO_FROM_NUMBER", twilio::FROM)
        .env("ASSEMBLYAI_API_KEY", agent::API_KEY)
        .env("TWILIO_API_BASE_URL", format!("http://{twilio}"))
        .env("ASSEMBLYAI_AGENT_URL", format!("ws://{agent}/v1/ws"))
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.jsonl"))?)
        .stderr(std::fs::File::create(dir.join("stderr.txt"))?)
        .spawn()?;
    Ok(Dialer {
        child,
        dir: dir.to_path_buf(),
    })
}

/// Wait for `done`, checking every 10 ms, until `limit`; false if it never happened.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

fn round(n: usize, opts: &Options) -> Result<Row, String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    let epoch = Instant::now();
    let dir = tempfile::tempdir().map_err(io("temp dir"))?;
    let agent_shared = Arc::new(agent::AgentShared::default());
    let a = agent_shared.clone();
    // One thread per service by default: on one thread the generator saturates near 1,000
    // calls and its own queueing shows in the round trips (`--threads 1` to compare).
    let (services, twilio_addr, tw, agent_addr) = if opts.threads == 1 {
        let (service, (twilio_addr, tw, agent_addr)) =
            Service::start("generator", move |stop| async move {
                let (twilio_addr, tw) = twilio::start(epoch, stop.clone()).await?;
                let agent_addr = start_agent(a, stop).await?;
                Ok((twilio_addr, tw, agent_addr))
            })
            .map_err(io("generator"))?;
        (vec![service], twilio_addr, tw, agent_addr)
    } else {
        let (twilio, (twilio_addr, tw)) =
            Service::start("twilio", move |stop| twilio::start(epoch, stop))
                .map_err(io("fake Twilio"))?;
        let (agent, agent_addr) =
            Service::start("agent", move |stop| start_agent(a, stop)).map_err(io("echo agent"))?;
        (vec![twilio, agent], twilio_addr, tw, agent_addr)
    };
    let csv = campaign_files(dir.path(), n).map_err(io("campaign files"))?;
    let mut dialer =
        spawn_dialer(opts, dir.path(), &csv, twilio_addr, agent_addr).map_err(io("dialer"))?;
    let pid = dialer.pid();
    let loadavg = loadavg();

    // The campaign opens one trial agent session before its first dial: the dialer is up,
    // and idle.
    if !wait_for(Duration::from_secs(60), || {
        agent_shared.preflight_seen.load(Ordering::SeqCst) || dialer.exited().is_some()
    }) || !agent_shared.preflight_seen.load(Ordering::SeqCst)
    {
        return Err(format!(
            "the dialer never opened its trial session; exit: {:?}",
            dialer.exited()
        ));
    }
    let idle = Proc::sample(pid)?;
    agent_shared.preflight_go.store(true, Ordering::SeqCst);

    let ramp_start = Instant::now();
    let ramp_limit = Duration::from_secs(30) + Duration::from_millis(60 * n as u64);
    wait_for(ramp_limit, || {
        tw.greeted.load(Ordering::SeqCst) >= n || dialer.exited().is_some()
    });
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    if let Some(exit) = dialer.exited() {
        return Err(format!("the dialer exited during the ramp: {exit}"));
    }
    // Let the last calls' setup (callbacks, database writes) settle before measuring.
    std::thread::sleep(Duration::from_secs(1));

    let before = Proc::sample(pid)?;
    let gen_before = Proc::sample(std::process::id())?;
    let machine_before = machine_busy_secs();
    let t0 = Instant::now();
    tw.window_start.store(tw.now_ns(), Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(opts.secs));
    tw.window_end.store(tw.now_ns(), Ordering::SeqCst);
    let after = Proc::sample(pid)?;
    let gen_after = Proc::sample(std::process::id())?;
    let machine_after = machine_busy_secs();
    let secs = t0.elapsed().as_secs_f64();
    let held_calls = tw
        .media()
        .iter()
        .filter(|m| {
            let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
            !st.closed && st.first_audio_ns.is_some()
        })
        .count();

    // Stop talking, let the last echoes come home, then every callee hangs up.
    tw.sending.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    tw.hang_up_all.cancel();
    let exited = wait_for(Duration::from_secs(60), || dialer.exited().is_some());
    let exit = if exited {
        dialer.exited().unwrap_or_default()
    } else {
        "still running 60 s after the last hang-up; killed".into()
    };

    let mut row = Row {
        n,
        held: held_calls,
        dropped: tw.dropped.load(Ordering::SeqCst),
        sent: 0,
        lost: 0,
        corrupted: 0,
        duplicates: 0,
        early: 0,
        backpressure: 0,
        rtts: 0,
        rtt: [f64::NAN; 4],
        first_audio: [f64::NAN; 3],
        ramp_secs,
        secs,
        dialer_cpu: after.cpu_secs - before.cpu_secs,
        dialer_sys: after.sys_secs - before.sys_secs,
        generator_cpu: gen_after.cpu_secs - gen_before.cpu_secs,
        others_cpu: (machine_after - machine_before)
            - (after.cpu_secs - before.cpu_secs)
            - (gen_after.cpu_secs - gen_before.cpu_secs),
        idle_rss_kib: idle.rss_kib,
        rss_kib: after.rss_kib,
        loadavg,
        errors: tw.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        exit,
    };
    let agent_errors = agent_shared.errors.load(Ordering::SeqCst);
    if agent_errors > 0 {
        row.errors
            .push(format!("{agent_errors} agent connections failed"));
    }
    let mut rtts = Vec::new();
    let mut first_audio = Vec::new();
    for m in tw.media() {
        let st = m.state.lock().unwrap_or_else(|e| e.into_inner());
        row.sent += u64::from(st.sent());
        row.lost += st.lost();
        row.corrupted += st.corrupted;
        row.duplicates += st.duplicates;
        row.early += st.early;
        row.backpressure += st.backpressure;
        rtts.extend_from_slice(&st.rtts);
        if let Some(at) = st.first_audio_ns {
            first_audio.push(at - st.start_sent_ns);
        }
    }
    rtts.sort_unstable();
    first_audio.sort_unstable();
    row.rtts = rtts.len();
    row.rtt = quantiles(&rtts, [0.5, 0.99, 0.999, 1.0]);
    row.first_audio = quantiles(&first_audio, [0.5, 0.99, 1.0]);
    drop(dialer);
    drop(services);
    Ok(row)
}

/// A process's CPU time and resident memory, from /proc.
struct Proc {
    cpu_secs: f64,
    /// Of which in the kernel.
    sys_secs: f64,
    rss_kib: u64,
}

impl Proc {
    fn sample(pid: u32) -> Result<Self, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
        // Fields after the command name, which may hold spaces: state is field 3, utime 14 and
        // stime 15, in clock ticks.
        let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu_secs = (ticks(11) + ticks(12)) as f64 / clock_ticks();
        let sys_secs = ticks(12) as f64 / clock_ticks();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Ok(Self {
            cpu_secs,
            sys_secs,
            rss_kib,
        })
    }
}

/// CPU time the whole machine has spent busy since boot, in seconds (/proc/stat: every state
/// but idle and iowait, and not guest time, which user time already counts).
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 8 | 9))
        .map(|(_, t)| t)
        .sum();
    busy as f64 / clock_ticks()
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (100 on Linux almost everywhere).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
