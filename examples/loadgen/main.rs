//! Load generator for the example media server (`docs/PROTOCOL.md`).
//!
//! ```sh
//! cargo run --release --example media_server -- --shards 1 &
//! cargo run --release --example loadgen -- --publishers 4 --subscribers-per-publisher 25 \
//!     --pps 200 --duration 10 --server-pid $(pgrep -n media_server)
//! ```
//!
//! Publishers and subscribers are the sans-IO str0m client peers of `rheomesh::testing`
//! (RTP mode, full ICE, one UDP socket each on `--bind`, 127.0.0.1 by default) driven by a
//! few media threads (`media.rs`, `media_thread.rs`, sockets in `net.rs`); their
//! WebSockets (`ws://` or `wss://`) run on a single-threaded tokio runtime
//! (`signaling.rs`). Phases: connect every peer, warm up (send, do not count), measure for
//! `--duration`, stop sending and drain, report.
//! `rheomesh::testing::payload` describes the synthetic VP8 payload, `stats.rs` the
//! measurements, `tls.rs` the `wss://` client configuration.

mod media;
mod media_thread;
mod net;
mod signaling;
mod stats;
mod tls;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::Instant;

use rheomesh::testing::payload::MIN_VIDEO_LEN;

use crate::media::{Engine, ThreadReport};
use crate::signaling::{Failure, Ready, Spec};
use crate::stats::{now_us, Histogram, Memory};

/// Load generator for the rheomesh example media server: str0m publishers and
/// subscribers over the WebSocket signaling protocol, reporting delivery, one-way latency
/// and (with --server-pid) the server's CPU time and memory.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Signaling endpoint (ws:// or wss://); `?room=` is added unless present.
    #[arg(
        long,
        env = "LOADGEN_URL",
        default_value = "ws://127.0.0.1:3000/socket"
    )]
    url: String,
    /// Subscribers connect here instead of --url: another node of a cluster (the example's
    /// `--redis`), so every packet crosses a relay between the two servers.
    #[arg(long, env = "LOADGEN_SUBSCRIBE_URL")]
    subscribe_url: Option<String>,
    /// wss://: accept any server certificate (e.g. the example server's self-signed --tls).
    #[arg(long, env = "LOADGEN_INSECURE")]
    insecure: bool,
    /// IPv4 address of the peers' UDP sockets (their host candidates): an address of this
    /// host that the server can reach.
    #[arg(long, env = "LOADGEN_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Room name (default: loadgen-PID, a fresh room per run).
    #[arg(long, env = "LOADGEN_ROOM")]
    room: Option<String>,
    /// Spread the publishers over this many rooms (`ROOM-0` …): publisher `i` and its
    /// subscribers join `ROOM-(i % rooms)`. With 1 (the default) everyone is in `ROOM`.
    /// Many rooms make a join storm without the room-wide `Published` fan-out of one big room.
    #[arg(long, default_value_t = 1)]
    rooms: u32,
    /// Number of publishers (one VP8 track each).
    #[arg(short = 'p', long, default_value_t = 1)]
    publishers: u32,
    /// Subscribers per publisher (each subscribes to one publisher's track).
    #[arg(short = 's', long, default_value_t = 1)]
    subscribers_per_publisher: u32,
    /// RTP packets per second per publisher (with `--simulcast`, per encoding).
    #[arg(long, default_value_t = 100)]
    pps: u32,
    /// Publishers send three simulcast encodings (rids `l`, `m`, `h`; keyframes announcing
    /// 320x180, 640x360, 1280x720), and subscriber `i` asks for layer `i % 3`
    /// (`SetPreferredLayer`). Each subscriber then receives one encoding: the delivery
    /// figures count against one encoding's packets.
    #[arg(long)]
    simulcast: bool,
    /// RTP payload size in bytes.
    #[arg(long, default_value_t = 1100)]
    payload: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Sending before the window (not counted), seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Waiting for in-flight packets after sending stops, seconds.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// Keyframe interval, seconds (publishers also answer PLI/FIR with a keyframe).
    #[arg(long, default_value_t = 2.0)]
    keyframe_interval: f64,
    /// PID of the media server: report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// With `--subscribe-url`: PID of the publishers' server, which relays each packet once
    /// to the subscribers' server (`--server-pid`): report its CPU per relayed packet.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Print one JSON object on stdout (the human-readable report goes to stderr).
    #[arg(long)]
    json: bool,
    /// A peer that is not connected this many seconds after it started fails the run.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout: f64,
    /// Peers setting up at the same time.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Threads driving the str0m peers.
    #[arg(long, default_value_t = 1)]
    media_threads: usize,
    /// Pin all loadgen threads to this CPU.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// No progress line on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Publishers start sending only once every peer is connected (by default they send
    /// from when all publishers are connected, so subscribers join live tracks). Setup then
    /// runs without media load, and the join figures include the wait for the whole setup.
    #[arg(long)]
    quiet_setup: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    Histogram::self_check();
    let _ = now_us(); // start the epoch
    str0m::crypto::from_feature_flags().install_process_default();
    if let Some(cpu) = args.pin_cpu {
        // Before any other thread exists: the runtime and media threads inherit it.
        if let Err(e) = stats::pin_to_cpu(cpu) {
            eprintln!("loadgen: error: --pin-cpu: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = validate(&args) {
        eprintln!("loadgen: error: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: error: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn validate(a: &Args) -> Result<(), String> {
    if a.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    if a.rooms == 0 || a.rooms > a.publishers {
        return Err("--rooms must be 1..=--publishers".into());
    }
    if a.pps == 0 || a.pps > 100_000 {
        return Err("--pps must be 1..=100000".into());
    }
    if a.payload < MIN_VIDEO_LEN || a.payload > 1200 {
        return Err(format!("--payload must be {MIN_VIDEO_LEN}..=1200 bytes"));
    }
    for (name, v) in [
        ("--duration", a.duration),
        ("--keyframe-interval", a.keyframe_interval),
        ("--connect-timeout", a.connect_timeout),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("{name} must be a positive number of seconds"));
        }
    }
    for (name, v) in [("--warmup", a.warmup), ("--drain", a.drain)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{name} must be zero or more seconds"));
        }
    }
    if a.media_threads == 0 || a.connect_concurrency == 0 {
        return Err("--media-threads and --connect-concurrency must be at least 1".into());
    }
    bind_v4(a.bind)?;
    Ok(())
}

/// The peers' address: IPv4 (the receive path reads IPv4 source addresses) and concrete
/// (it is their ICE host candidate).
fn bind_v4(ip: IpAddr) -> Result<Ipv4Addr, String> {
    match ip {
        IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_broadcast() && !v4.is_multicast() => {
            Ok(v4)
        }
        IpAddr::V4(v4) => Err(format!(
            "--bind {v4}: give a concrete address of this host (it is the peers' ICE candidate)"
        )),
        IpAddr::V6(v6) => Err(format!("--bind {v6}: loadgen peers support IPv4 only")),
    }
}

/// `url` with `room` in its query (unless it has one), or why it is not usable.
fn room_url(url: &str, room: &str) -> Result<String, String> {
    if !url.starts_with("ws://") && !url.starts_with("wss://") {
        return Err(format!(
            "{url}: the URL must start with ws:// or wss:// (e.g. ws://127.0.0.1:3000/socket)"
        ));
    }
    let has_room = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("room=")));
    Ok(if has_room {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&room={room}")
    } else {
        format!("{url}?room={room}")
    })
}

/// The progress line on stderr.
struct Progress {
    enabled: bool,
    engine: Arc<Engine>,
    subs_per_pub: u64,
    last: Option<(Instant, u64, u64, f64)>,
    /// Last computed (delivery %, loadgen CPU %).
    rates: (Option<f64>, Option<f64>),
    width: usize,
}

impl Progress {
    fn line(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let pad = self.width.saturating_sub(text.len());
        self.width = text.len();
        eprint!("\r{text}{}", " ".repeat(pad));
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.width > 0 {
            eprintln!();
            self.width = 0;
        }
    }

    /// Redraw the traffic line. Rates are over the last >= 0.4 s.
    fn traffic(&mut self, phase: &str, elapsed: f64, total: f64) {
        let (sent, received, _) = self.engine.totals();
        let now = Instant::now();
        let cpu = stats::self_cpu_seconds();
        match self.last {
            Some((t, s0, r0, c0)) if now.duration_since(t) >= Duration::from_millis(400) => {
                let expect = (sent - s0) * self.subs_per_pub;
                self.rates = (
                    (expect > 0).then(|| 100.0 * (received - r0) as f64 / expect as f64),
                    Some(100.0 * (cpu - c0) / now.duration_since(t).as_secs_f64()),
                );
                self.last = Some((now, sent, received, cpu));
            }
            Some(_) => {}
            None => self.last = Some((now, sent, received, cpu)),
        }
        let pct = |v: Option<f64>| v.map_or("    -".into(), |v| format!("{v:5.1}%"));
        let (delivery, load) = (pct(self.rates.0), pct(self.rates.1));
        self.line(&format!(
            "[{phase} {elapsed:5.1}/{total:.1} s] sent {sent} received {received} \
             delivery {delivery} loadgen CPU {load}"
        ));
    }
}

/// Server /proc samples.
#[derive(Debug, Clone, Copy, Default)]
struct ServerSample {
    cpu_s: f64,
    mem: Memory,
}

fn sample_server(pid: Option<u32>) -> Result<Option<ServerSample>, String> {
    let Some(pid) = pid else { return Ok(None) };
    Ok(Some(ServerSample {
        cpu_s: stats::process_cpu_seconds(pid)?,
        mem: stats::process_memory(pid)?,
    }))
}

/// Like [`sample_server`], but a server that went away mid-run is a warning (the report
/// then has no server figures), not an error.
fn sample_server_or_warn(pid: Option<u32>) -> Option<ServerSample> {
    sample_server(pid).unwrap_or_else(|e| {
        eprintln!("\nloadgen: warning: server sample failed (did the server exit?): {e}");
        None
    })
}

/// Wait for every setup result, redrawing a progress line. `None` for a participant
/// whose task vanished.
async fn gather(
    rxs: Vec<oneshot::Receiver<Result<Ready, Failure>>>,
    what: &str,
    progress: &mut Progress,
) -> Vec<Result<Ready, Failure>> {
    let total = rxs.len();
    let mut pending: FuturesUnordered<_> = rxs
        .into_iter()
        .map(|rx| async move {
            rx.await.unwrap_or_else(|_| {
                Err(Failure {
                    who: "a participant".into(),
                    reason: "its task ended without a result".into(),
                })
            })
        })
        .collect();
    let mut out = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();
    loop {
        tokio::select! {
            r = pending.next() => match r {
                Some(r) => out.push(r),
                None => break,
            },
            _ = tick.tick() => {
                let ok = out.iter().filter(|r| r.is_ok()).count();
                let failed = out.len() - ok;
                progress.line(&format!(
                    "[connect {:4.1} s] {what}: {ok}/{total} ready, {failed} failed",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    out
}

/// "3 of 100 peers failed" with the reasons grouped.
fn failure_report(failures: &[&Failure], total: usize) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for f in failures {
        match groups.iter_mut().find(|(r, _)| *r == f.reason) {
            Some((_, who)) => who.push(&f.who),
            None => groups.push((f.reason.clone(), vec![&f.who])),
        }
    }
    let mut s = format!("{} of {total} peers failed to connect:", failures.len());
    for (reason, who) in groups {
        let names = if who.len() > 3 {
            format!("{}, ... ({} peers)", who[..3].join(", "), who.len())
        } else {
            who.join(", ")
        };
        s.push_str(&format!("\n  - {reason}  [{names}]"));
    }
    s
}

/// Sleep until `until`, redrawing the traffic line.
async fn phase(progress: &mut Progress, name: &str, start: Instant, until: Instant) {
    let total = until.saturating_duration_since(start).as_secs_f64();
    loop {
        let now = Instant::now();
        progress.traffic(
            name,
            now.saturating_duration_since(start).as_secs_f64(),
            total,
        );
        if now >= until {
            return;
        }
        tokio::time::sleep_until(until.min(now + Duration::from_millis(500))).await;
    }
}

async fn run(args: Args) -> Result<(), String> {
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("loadgen-{}", std::process::id()));
    let url = room_url(&args.url, &room)?;
    let bind = bind_v4(args.bind)?;
    let tls = tls::connector(args.insecure)?;
    let p = args.publishers;
    let s = args.subscribers_per_publisher;
    let subscribers = u64::from(p) * u64::from(s);
    let progress_enabled = !args.no_progress;

    // The server must exist and answer before anything else.
    if let Some(pid) = args.server_pid {
        stats::process_cpu_seconds(pid).map_err(|e| format!("--server-pid {pid}: {e}"))?;
    }
    let preflight = signaling::connect(&url, tls.as_ref(), Instant::now() + Duration::from_secs(5))
        .await
        .map_err(|e| {
            if e.starts_with("cannot connect") {
                format!("{e} (is the media server running?)")
            } else {
                e
            }
        })?;
    drop(preflight);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let server_before = sample_server(args.server_pid)?;
    let engine = Arc::new(Engine::start(args.media_threads)?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let urls_of = |base: &str| -> Result<Vec<String>, String> {
        if args.rooms == 1 {
            Ok(vec![room_url(base, &room)?])
        } else {
            (0..args.rooms)
                .map(|r| room_url(base, &format!("{room}-{r}")))
                .collect()
        }
    };
    let urls = urls_of(&args.url)?;
    let subscribe_urls = match &args.subscribe_url {
        Some(u) => urls_of(u)?,
        None => urls.clone(),
    };
    let ctx = Arc::new(signaling::Ctx {
        urls,
        subscribe_urls,
        tls,
        bind,
        simulcast: args.simulcast,
        engine: engine.clone(),
        timeout: Duration::from_secs_f64(args.connect_timeout),
        shutdown: shutdown_rx,
        incidents: AtomicU64::new(0),
        incident_samples: Mutex::new(Vec::new()),
    });
    let mut progress = Progress {
        enabled: progress_enabled,
        engine: engine.clone(),
        subs_per_pub: u64::from(s),
        last: None,
        rates: (None, None),
        width: 0,
    };
    let human = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    human(format!(
        "loadgen: {p} publisher(s) x {s} subscriber(s) = {subscribers} subscribers, \
         {} pps x {} B per publisher -> {url}",
        args.pps, args.payload
    ));

    // Connect: publishers first (subscribers need their tracks), then subscribers.
    let setup_started = Instant::now();
    let track_id = |i: u32| format!("{room}-track-{i}");
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rxs = Vec::new();
    for i in 0..p {
        let (tx, rx) = oneshot::channel();
        let permit = limit.clone().acquire_owned().await.ok();
        let spec = Spec::Publisher {
            index: i,
            track_id: track_id(i),
        };
        tasks.spawn(signaling::run(ctx.clone(), spec, tx, permit));
        rxs.push(rx);
        if i % 8 == 7 {
            tokio::task::yield_now().await;
        }
    }
    let mut results = gather(rxs, "publishers", &mut progress).await;
    let pubs_failed = results.iter().any(|r| r.is_err());
    let start_sending = || {
        engine.start_sending(
            args.pps,
            args.payload,
            Duration::from_secs_f64(args.keyframe_interval),
        )
    };
    // Subscribers join live tracks, as in a call: the join figures measure the server's
    // answer → ICE/DTLS → keyframe path, not the rest of loadgen's setup.
    if !pubs_failed && !args.quiet_setup {
        start_sending();
    }
    if !pubs_failed && subscribers > 0 {
        let mut rxs = Vec::new();
        let mut specs = Vec::new();
        for i in 0..subscribers {
            let (tx, rx) = oneshot::channel();
            let publisher = (i % u64::from(p)) as u32;
            specs.push((
                Spec::Subscriber {
                    index: i as u32,
                    publisher,
                    track_id: track_id(publisher),
                },
                tx,
            ));
            rxs.push(rx);
        }
        // The launcher waits for setup slots; gather() watches the results meanwhile.
        let (ctx2, limit2) = (ctx.clone(), limit.clone());
        let launcher = tokio::spawn(async move {
            let mut handles = Vec::new();
            for (spec, tx) in specs {
                let permit = limit2.clone().acquire_owned().await.ok();
                handles.push(tokio::spawn(signaling::run(ctx2.clone(), spec, tx, permit)));
            }
            handles
        });
        results.extend(gather(rxs, "subscribers", &mut progress).await);
        for h in launcher.await.unwrap_or_default() {
            tasks.spawn(async move {
                let _ = h.await;
            });
        }
    }
    progress.finish();
    let setup_ms = setup_started.elapsed().as_secs_f64() * 1000.0;
    let failures: Vec<&Failure> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let total_peers = u64::from(p) + subscribers;
    if !failures.is_empty() {
        let mut msg = failure_report(&failures, results.len());
        if pubs_failed && subscribers > 0 {
            msg.push_str(&format!(
                "\n  ({subscribers} subscribers were not started because a publisher failed)"
            ));
        }
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        engine.shutdown();
        return Err(msg);
    }
    let mut per_peer: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.setup.as_secs_f64() * 1000.0)
        .collect();
    per_peer.sort_by(f64::total_cmp);
    let pct = |q: f64| quantile(&per_peer, q).unwrap_or(0.0);
    human(format!(
        "setup:      {total_peers} peers connected in {setup_ms:.0} ms \
         (per peer: p50 {:.0} ms, max {:.0} ms)",
        pct(0.5),
        pct(1.0)
    ));

    // Warm up, measure, drain.
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let send_start = Instant::now();
    let window_start_us = now_us() + warmup.as_micros() as u64;
    let window_end_us = window_start_us + duration.as_micros() as u64;
    engine.set_window(window_start_us, window_end_us);
    if args.quiet_setup {
        start_sending();
    }
    let window_start: Instant = stats::instant_of_us(window_start_us).into();
    let window_end: Instant = stats::instant_of_us(window_end_us).into();
    phase(&mut progress, "warmup ", send_start, window_start).await;

    let t0 = Instant::now();
    let server0 = sample_server_or_warn(args.server_pid);
    let relay0 = sample_server_or_warn(args.relay_pid);
    let self0 = stats::self_cpu_seconds();
    let tids = engine.thread_ids();
    let threads0: Vec<f64> = tids
        .iter()
        .map(|t| stats::thread_cpu_seconds(*t).unwrap_or(0.0))
        .collect();
    let udp0 = stats::udp_errors();

    phase(&mut progress, "measure", window_start, window_end).await;

    let server1 = sample_server_or_warn(args.server_pid);
    let relay1 = sample_server_or_warn(args.relay_pid);
    let self1 = stats::self_cpu_seconds();
    let threads1: Vec<f64> = tids
        .iter()
        .map(|t| stats::thread_cpu_seconds(*t).unwrap_or(0.0))
        .collect();
    let udp1 = stats::udp_errors();
    let wall = t0.elapsed().as_secs_f64();

    engine.stop_sending().await;
    let drain_start = Instant::now();
    phase(
        &mut progress,
        "drain  ",
        drain_start,
        drain_start + Duration::from_secs_f64(args.drain),
    )
    .await;
    progress.finish();
    let reports = engine.report().await;
    let server_end = sample_server_or_warn(args.server_pid);
    // Before shutdown: closing the WebSockets makes the server announce Unpublished.
    let incidents = ctx.incidents.load(std::sync::atomic::Ordering::Relaxed);
    let incident_samples = ctx
        .incident_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    engine.shutdown();

    // Results.
    let r = Results::new(&reports);
    let loadgen_cpu = (self1 - self0) / wall;
    let thread_cpu: Vec<f64> = threads0
        .iter()
        .zip(&threads1)
        .map(|(a, b)| (b - a) / wall)
        .collect();
    let allowed = stats::allowed_cpus() as f64;
    let saturated = thread_cpu.iter().any(|c| *c >= 0.85) || loadgen_cpu >= 0.85 * allowed;
    let udp = match (udp0, udp1) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1, b.2 - a.2)),
        _ => None,
    };

    let lat = |q: f64| r.latency.quantile(q);
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.3} ms", v as f64 / 1000.0));
    human(format!(
        "load:       warmup {:.1} s, window {:.1} s (measured {wall:.2} s), drain {:.1} s, \
         keyframe every {:.1} s",
        args.warmup, args.duration, args.drain, args.keyframe_interval
    ));
    let join_ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    let media_q = |q: f64| quantile(&r.first_media_ms, q);
    let (conn_q, wait_q) = (
        |q: f64| quantile(&r.connected_ms, q),
        |q: f64| quantile(&r.media_after_connected_ms, q),
    );
    human(format!(
        "join:       first media after answer p50 {}, p95 {}, max {} ({} of {} subscribers \
         got media)",
        join_ms(media_q(0.5)),
        join_ms(media_q(0.95)),
        join_ms(media_q(1.0)),
        r.first_media_ms.len(),
        r.subscribers
    ));
    human(format!(
        "            = answer -> ICE/DTLS connected p50 {}, p95 {}, max {}; then first media \
         p50 {}, p95 {}, max {}{}",
        join_ms(conn_q(0.5)),
        join_ms(conn_q(0.95)),
        join_ms(conn_q(1.0)),
        join_ms(wait_q(0.5)),
        join_ms(wait_q(0.95)),
        join_ms(wait_q(1.0)),
        if args.quiet_setup {
            " (--quiet-setup: media started after the last peer connected)"
        } else {
            ""
        }
    ));
    human(format!(
        "packets:    sent {} in window ({:.1} pps per publisher), expected {} (sent x {s}), \
         received {} (unique, in window)",
        r.sent,
        r.sent as f64 / wall / f64::from(p),
        r.expected,
        r.received
    ));
    human(format!(
        "delivery:   {}   (duplicates {}, corrupt {}, foreign {}; keyframes sent {}, \
         keyframe requests {}, sender slips {})",
        r.delivery
            .map_or("n/a (no subscribers)".into(), |d| format!(
                "{:.3} %",
                d * 100.0
            )),
        r.duplicates,
        r.corrupt,
        r.foreign,
        r.keyframes,
        r.keyframe_requests,
        r.slips
    ));
    human(format!(
        "latency:    p50 {}  p95 {}  p99 {}  max {}  mean {}  (one-way send -> kernel \
         receive timestamp, {} packets)",
        ms(lat(0.50)),
        ms(lat(0.95)),
        ms(lat(0.99)),
        ms(r.latency.max()),
        ms(r.latency.mean()),
        r.latency.count()
    ));
    let lat_app = |q: f64| r.latency_app.quantile(q);
    human(format!(
        "            p50 {}  p95 {}  p99 {}  max {}  (send -> handled by loadgen: adds \
         loadgen's own receive queueing)",
        ms(lat_app(0.50)),
        ms(lat_app(0.95)),
        ms(lat_app(0.99)),
        ms(r.latency_app.max()),
    ));
    let threads_txt = thread_cpu
        .iter()
        .map(|c| format!("{:.1} %", c * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    human(format!(
        "loadgen:    CPU {:.1} % of one core ({:.2} s in window; {} CPU(s) allowed); \
         media thread(s) {threads_txt}; send errors {}",
        loadgen_cpu * 100.0,
        self1 - self0,
        allowed,
        r.send_errors
    ));
    if saturated {
        human(
            "WARNING:    loadgen is near 100 % of a core: it may be the bottleneck, not the \
             server (try --media-threads, fewer peers or a lower --pps)"
                .into(),
        );
    }
    if r.slips > 0 {
        human(format!(
            "WARNING:    publishers fell more than {} ms behind schedule {} time(s) \
             (loadgen overloaded)",
            200, r.slips
        ));
    }
    if let Some((inerr, rcvbuf, sndbuf)) = udp {
        human(format!(
            "kernel:     UDP during window (host-wide): RcvbufErrors +{rcvbuf}, \
             InErrors +{inerr}, SndbufErrors +{sndbuf}"
        ));
    }
    let without_media = r.subscribers - r.first_media_ms.len() as u64;
    if without_media > 0 {
        human(format!(
            "WARNING:    {without_media} subscriber(s) received no media at all"
        ));
    }
    if r.unconnected > 0 {
        human(format!(
            "WARNING:    {} subscriber peer(s) were not connected at the end",
            r.unconnected
        ));
    }
    if incidents > 0 || r.disconnects > 0 {
        human(format!(
            "WARNING:    {incidents} signaling incident(s), {} ICE disconnect(s) after setup: {}",
            r.disconnects,
            incident_samples.join("; ")
        ));
    }
    let server_json = match (args.server_pid, server_before, server0, server1, server_end) {
        (Some(pid), Some(before), Some(a), Some(b), Some(end)) => {
            let cpu = b.cpu_s - a.cpu_s;
            let per_packet = (r.received > 0).then(|| cpu * 1e6 / r.received as f64);
            let per_cpu_s = (cpu > 0.0).then(|| r.received as f64 / cpu);
            let rss_per_sub = (subscribers > 0)
                .then(|| (b.mem.rss_kb as f64 - before.mem.rss_kb as f64) / subscribers as f64);
            human(format!(
                "server:     pid {pid}: CPU {cpu:.2} s in window = {:.1} % of one core \
                 (utime+stime {:.2} s before, {:.2} s after)",
                cpu / wall * 100.0,
                a.cpu_s,
                b.cpu_s
            ));
            human(format!(
                "            {} CPU per forwarded packet, {} forwarded packets per CPU-second",
                per_packet.map_or("-".into(), |v| format!("{v:.2} µs")),
                per_cpu_s.map_or("-".into(), |v| format!("{v:.0}"))
            ));
            human(format!(
                "            RSS before load {} KiB, at window end {} KiB, after drain {} KiB, \
                 peak (VmHWM) {} KiB; {} per subscriber",
                before.mem.rss_kb,
                b.mem.rss_kb,
                end.mem.rss_kb,
                end.mem.hwm_kb,
                rss_per_sub.map_or("-".into(), |v| format!("{v:.1} KiB"))
            ));
            json!({
                "pid": pid,
                "cpu_s_before": a.cpu_s,
                "cpu_s_after": b.cpu_s,
                "cpu_s_window": cpu,
                "cpu_percent_of_core": cpu / wall * 100.0,
                "cpu_us_per_forwarded_packet": per_packet,
                "forwarded_packets_per_cpu_second": per_cpu_s,
                "rss_before_kb": before.mem.rss_kb,
                "rss_loaded_kb": b.mem.rss_kb,
                "rss_end_kb": end.mem.rss_kb,
                "vm_hwm_kb": end.mem.hwm_kb,
                "rss_per_subscriber_kb": rss_per_sub,
            })
        }
        _ => Value::Null,
    };

    // The publishers' node relays each packet once: what subscribers received, per
    // subscriber of a publisher (delivery is near 100 % in a healthy run).
    let relay_json = match (args.relay_pid, relay0, relay1) {
        (Some(pid), Some(a), Some(b)) => {
            let cpu = b.cpu_s - a.cpu_s;
            let relayed = r.received as f64 / f64::from(s.max(1));
            let per_packet = (relayed > 0.0).then(|| cpu * 1e6 / relayed);
            human(format!(
                "relay node: pid {pid}: CPU {cpu:.2} s in window = {:.1} % of one core; {} CPU \
                 per relayed packet (≈ {relayed:.0} relayed: received / subscribers per publisher)",
                cpu / wall * 100.0,
                per_packet.map_or("-".into(), |v| format!("{v:.2} µs")),
            ));
            json!({
                "pid": pid,
                "cpu_s_window": cpu,
                "cpu_percent_of_core": cpu / wall * 100.0,
                "relayed_packets": relayed,
                "cpu_us_per_relayed_packet": per_packet,
            })
        }
        _ => Value::Null,
    };

    if args.json {
        // Separate: one json! with every key exceeds the macro recursion limit.
        let join_json = json!({
            "first_media_after_answer_ms": {
                "p50": media_q(0.5),
                "p95": media_q(0.95),
                "max": media_q(1.0),
            },
            "connected_after_answer_ms": {
                "p50": conn_q(0.5),
                "p95": conn_q(0.95),
                "max": conn_q(1.0),
            },
            "first_media_after_connected_ms": {
                "p50": wait_q(0.5),
                "p95": wait_q(0.95),
                "max": wait_q(1.0),
            },
            "subscribers": r.subscribers,
            "subscribers_with_media": r.first_media_ms.len(),
            "subscribers_without_media": without_media,
            "clock": "first Answer sent to the server -> kernel receive timestamp of the first RTP packet",
        });
        let out = json!({
            "url": url,
            "room": room,
            "publishers": p,
            "subscribers_per_publisher": s,
            "subscribers": subscribers,
            "pps_per_publisher": args.pps,
            "quiet_setup": args.quiet_setup,
            "payload_bytes": args.payload,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "window_measured_s": wall,
            "peers_connected": total_peers,
            "setup_ms": setup_ms,
            "setup_ms_per_peer_p50": pct(0.5),
            "setup_ms_per_peer_max": pct(1.0),
            "join": join_json,
            "packets_sent": r.sent,
            "packets_expected": r.expected,
            "packets_received": r.received,
            "delivery_ratio": r.delivery,
            "duplicates": r.duplicates,
            "corrupt": r.corrupt,
            "keyframes_sent": r.keyframes,
            "keyframe_requests": r.keyframe_requests,
            "sender_slips": r.slips,
            "latency_us": {
                "p50": lat(0.50),
                "p95": lat(0.95),
                "p99": lat(0.99),
                "max": r.latency.max(),
                "mean": r.latency.mean(),
                "count": r.latency.count(),
                "clock": "send time to kernel receive timestamp (SO_TIMESTAMPNS)",
            },
            "latency_loadgen_us": {
                "p50": lat_app(0.50),
                "p95": lat_app(0.95),
                "p99": lat_app(0.99),
                "max": r.latency_app.max(),
                "mean": r.latency_app.mean(),
                "clock": "send time to loadgen handling the packet",
            },
            "loadgen": {
                "cpu_s_window": self1 - self0,
                "cpu_percent_of_core": loadgen_cpu * 100.0,
                "media_threads_cpu_percent": thread_cpu.iter().map(|c| c * 100.0).collect::<Vec<_>>(),
                "allowed_cpus": allowed,
                "saturated": saturated,
                "send_errors": r.send_errors,
            },
            "kernel_udp_window": udp.map(|(i, r, s)| json!({"in_errors": i, "rcvbuf_errors": r, "sndbuf_errors": s})),
            "incidents": incidents,
            "ice_disconnects": r.disconnects,
            "subscribers_unconnected_at_end": r.unconnected,
            "server": server_json,
            "relay_node": relay_json,
        });
        println!("{out}");
    }
    Ok(())
}

/// The value at quantile `q` (0..=1) of `sorted` (ascending); `None` if it is empty.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((q * sorted.len() as f64) as usize).min(last)])
}

/// Totals over all media threads.
struct Results {
    sent: u64,
    expected: u64,
    received: u64,
    delivery: Option<f64>,
    duplicates: u64,
    corrupt: u64,
    foreign: u64,
    keyframes: u64,
    keyframe_requests: u64,
    slips: u64,
    send_errors: u64,
    disconnects: u64,
    latency_app: Histogram,
    /// Subscribers whose str0m peer was not connected at the end.
    unconnected: u64,
    latency: Histogram,
    /// Subscribers reported by the media threads.
    subscribers: u64,
    /// First answer sent → first RTP packet, ms, sorted; one entry per subscriber that got
    /// media (the others are `subscribers` minus its length).
    first_media_ms: Vec<f64>,
    /// First answer sent → ICE/DTLS connected, ms, sorted.
    connected_ms: Vec<f64>,
    /// ICE/DTLS connected → first RTP packet, ms, sorted.
    media_after_connected_ms: Vec<f64>,
}

impl Results {
    fn new(reports: &[ThreadReport]) -> Results {
        let mut sent_by_pub = std::collections::HashMap::new();
        let mut r = Results {
            sent: 0,
            expected: 0,
            received: 0,
            delivery: None,
            duplicates: 0,
            corrupt: 0,
            foreign: 0,
            keyframes: 0,
            keyframe_requests: 0,
            slips: 0,
            send_errors: 0,
            disconnects: 0,
            unconnected: 0,
            latency: Histogram::default(),
            latency_app: Histogram::default(),
            subscribers: 0,
            first_media_ms: Vec::new(),
            connected_ms: Vec::new(),
            media_after_connected_ms: Vec::new(),
        };
        let ms = |us: u64| us as f64 / 1000.0;
        for t in reports {
            for p in &t.publishers {
                sent_by_pub.insert(p.index, p.sent_window);
                r.sent += p.sent_window;
                r.keyframes += p.keyframes;
                r.keyframe_requests += p.keyframe_requests;
                r.slips += p.slips;
            }
            r.latency.merge(&t.latency);
            r.latency_app.merge(&t.latency_app);
            r.send_errors += t.send_errors;
            r.disconnects += t.disconnects;
        }
        for t in reports {
            for sub in &t.subscribers {
                r.expected += sent_by_pub.get(&sub.publisher).copied().unwrap_or(0);
                r.received += sub.unique_window;
                r.duplicates += sub.duplicates;
                r.corrupt += sub.corrupt;
                r.foreign += sub.foreign;
                r.unconnected += u64::from(!sub.connected);
                r.subscribers += 1;
                let j = &sub.join;
                r.first_media_ms
                    .extend(j.first_media_after_answer_us().map(ms));
                r.connected_ms.extend(j.connected_after_answer_us().map(ms));
                r.media_after_connected_ms
                    .extend(j.first_media_after_connected_us().map(ms));
            }
        }
        for v in [
            &mut r.first_media_ms,
            &mut r.connected_ms,
            &mut r.media_after_connected_ms,
        ] {
            v.sort_by(f64::total_cmp);
        }
        r.delivery = (r.expected > 0).then(|| r.received as f64 / r.expected as f64);
        r
    }
}
