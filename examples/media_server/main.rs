//! Example media server: a web page and a WebSocket signaling endpoint (`PROTOCOL.md`) on
//! top of the rheomesh library. One room = one rheomesh `Router`.
//!
//! ```sh
//! cargo run --release --example media_server -- --port 3000
//! # open http://127.0.0.1:3000/?room=demo in two tabs
//! ```
//!
//! This file parses arguments, starts the worker, serves HTTP (the page, `/socket`,
//! `/healthz`, `/metrics`) and shuts down gracefully on SIGTERM or Ctrl-C; `room.rs` keeps
//! the rooms, `session.rs` handles one WebSocket, `protocol.rs` defines its messages,
//! `telemetry.rs` renders the metrics, `tls.rs` holds the TLS options, `cluster.rs` joins
//! other servers through Redis (`--redis`).

mod cluster;
mod limits;
mod protocol;
mod record;
mod room;
mod session;
mod telemetry;
mod tls;
mod whip;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use rheomesh::config::{
    MediaConfig, RTCIceServer, RelayConfig, WebRTCTransportConfig, WorkerConfig,
    DEFAULT_INITIAL_BITRATE_BPS,
};
use rheomesh::worker::Worker;
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::time::Instant;

use crate::room::Rooms;
use crate::session::Live;

/// Longest room name accepted.
const MAX_ROOM_NAME: usize = 128;
/// Largest WebSocket message accepted (an SDP is at most 256 KiB).
const MAX_MESSAGE: usize = 512 * 1024;
/// The whole graceful shutdown (sessions, transports, HTTP) takes at most this long.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Rheomesh example media server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// IP address of the media (UDP) sockets, and of HTTP unless --http-bind is given. Must
    /// be a concrete address of this host: it is the host candidate browsers send media to.
    #[arg(long, env = "RHEOMESH_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// IP address for HTTP (page, WebSocket, /metrics, /healthz); may be 0.0.0.0 or ::.
    /// Default: --bind.
    #[arg(long, env = "RHEOMESH_HTTP_BIND")]
    http_bind: Option<IpAddr>,
    /// HTTP port.
    #[arg(long, env = "RHEOMESH_PORT", default_value_t = 3000)]
    port: u16,
    /// Address to announce in ICE candidates instead of --bind (1:1 NAT); repeatable,
    /// or comma-separated in the environment variable.
    #[arg(
        long = "announce-ip",
        env = "RHEOMESH_ANNOUNCE_IP",
        value_delimiter = ','
    )]
    announce_ip: Vec<IpAddr>,
    /// STUN server (stun:host[:port]) each shard asks once for its public address, which it
    /// then announces; repeatable, or comma-separated in the environment variable.
    #[arg(
        long = "ice-server",
        env = "RHEOMESH_ICE_SERVER",
        value_delimiter = ',',
        value_parser = parse_ice_server
    )]
    ice_server: Vec<String>,
    /// Number of media shards (threads with a UDP socket each). Default: available cores.
    #[arg(long, env = "RHEOMESH_SHARDS")]
    shards: Option<usize>,
    /// First UDP port of the shards (shard i binds rtc-port + i); 0 = ephemeral ports.
    #[arg(long, env = "RHEOMESH_RTC_PORT", default_value_t = 0)]
    rtc_port: u16,
    /// Serve HTTPS/WSS with a self-signed certificate generated at start (needed for
    /// camera/microphone access from other machines; browsers will show a warning).
    #[arg(long, env = "RHEOMESH_TLS")]
    tls: bool,
    /// Serve HTTPS/WSS with this PEM certificate chain (with --tls-key) instead of a
    /// self-signed one.
    #[arg(long, env = "RHEOMESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RHEOMESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most HTTP/WebSocket connections open at once; further ones are closed on accept (and
    /// logged). Keep it under the process's descriptor limit (`ulimit -n`), which the media
    /// shards and the runtime also use.
    #[arg(long, env = "RHEOMESH_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a new connection has to send a complete HTTP request; one that sends half a
    /// request and waits is closed then.
    #[arg(long, env = "RHEOMESH_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Bandwidth estimation on subscribe transports: each subscriber gets the simulcast or
    /// SVC layers its link carries (`MediaConfig::bandwidth_estimation`). Off by default, as
    /// in the library: it costs CPU and memory per subscriber (README, "Bandwidth
    /// estimation") and is not yet tested with browsers on shaped links.
    #[arg(long, env = "RHEOMESH_BWE", value_enum, default_value_t = Bwe::Off)]
    bwe: Bwe,
    /// The estimate a subscriber's link starts from, in bits per second, with --bwe on.
    #[arg(long, env = "RHEOMESH_BWE_INITIAL_BPS", default_value_t = DEFAULT_INITIAL_BITRATE_BPS)]
    bwe_initial_bps: u64,
    /// Where recorded tracks are sent as plain RTP (`Record`, `StartRecording`).
    #[arg(long, env = "RECORDING_HOST", default_value = "127.0.0.1")]
    record_host: String,
    /// The first port recorded tracks are sent to: a participant's tracks get port pairs
    /// from there (RTP, RTCP), each next participant 16 ports further.
    #[arg(long, env = "RECORDING_PORT", default_value_t = 15000)]
    record_port: u16,
    /// Record into this directory: `StartRecording` runs ffmpeg (which must be on the
    /// PATH) with `-c copy` into a .mkv file per track, listening on --record-host.
    #[arg(long, env = "RHEOMESH_RECORD_DIR")]
    record_dir: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on the WHIP and WHEP endpoints (/whip/..., /whep/...).
    #[arg(long, env = "RHEOMESH_WHIP_TOKEN")]
    whip_token: Option<String>,
    /// Join a cluster of media servers through this Redis server (redis://HOST:PORT/): the
    /// participants of a room see and subscribe to its tracks and data channels on every
    /// node, with their names and mute state, and WHEP plays a stream of any node
    /// (cluster.rs). Needs --relay-secret.
    #[arg(long, env = "RHEOMESH_REDIS")]
    redis: Option<String>,
    /// This node's id in the cluster (A-Z, a-z, 0-9, '.', '_', '-'). Default: a random one.
    #[arg(long, env = "RHEOMESH_NODE_ID", requires = "redis")]
    node_id: Option<String>,
    /// TCP address of the relay port other nodes relay tracks to (port 0: any free port).
    /// Default: --bind, port 0. An unspecified IP (0.0.0.0) is announced as --bind.
    #[arg(long, env = "RHEOMESH_RELAY_BIND")]
    relay_bind: Option<SocketAddr>,
    /// Secret shared by the nodes that relay to each other (at least 16 bytes); enables the
    /// relay port.
    #[arg(long, env = "RHEOMESH_RELAY_SECRET", hide_env_values = true)]
    relay_secret: Option<String>,
    /// With --redis: how long, in milliseconds, a track (or data channel) relayed here from
    /// another node stays relayed after its last subscriber here is gone (a page reload within it finds it
    /// still relayed); then the relay is stopped.
    #[arg(long, env = "RHEOMESH_RELAY_LINGER_MS", default_value_t = 2000)]
    relay_linger_ms: u64,
}

/// `--bwe`: bandwidth estimation on subscribe transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bwe {
    On,
    Off,
}

/// `stun:host[:port]`, as the library understands it (it ignores other schemes).
fn parse_ice_server(url: &str) -> Result<String, String> {
    let url = url.trim();
    let Some(rest) = url.strip_prefix("stun:") else {
        return Err(format!(
            "{url:?}: only stun: servers are supported (e.g. stun:stun.example.org:3478); \
             the server is ICE-lite and uses no TURN"
        ));
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !rest.ends_with(']') => {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {port:?}"))?;
            host
        }
        _ => rest,
    };
    if host.is_empty() || host.contains(['/', '?', '@', ' ']) {
        return Err(format!("{url:?}: expected stun:host[:port]"));
    }
    Ok(url.to_owned())
}

#[derive(Clone)]
struct AppState {
    rooms: Rooms,
    transport_config: WebRTCTransportConfig,
    shutdown: watch::Receiver<bool>,
    live: Live,
    worker: Arc<Mutex<Worker>>,
    metrics: PrometheusHandle,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("media_server: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    if args.bind.is_unspecified() {
        return Err(format!(
            "--bind {}: the media (UDP) address must be a concrete address of this host, since \
             browsers send media to it; bind e.g. your LAN address (with --announce-ip for a \
             1:1 NAT), and use --http-bind {} to serve HTTP on every interface",
            args.bind, args.bind
        )
        .into());
    }
    if let Some(ip) = args.announce_ip.iter().find(|ip| ip.is_unspecified()) {
        return Err(format!("--announce-ip {ip}: announce a concrete address").into());
    }
    let mut worker_config = WorkerConfig::default();
    worker_config.bind_ip = args.bind;
    worker_config.port_min = args.rtc_port;
    if let Some(shards) = args.shards {
        if shards == 0 {
            return Err("--shards must be at least 1".into());
        }
        worker_config.shards = shards;
    }
    match (&args.redis, &args.relay_secret) {
        (Some(_), None) => {
            return Err(
                "--redis needs --relay-secret (the same on every node, at least 16 \
                        bytes): nodes relay tracks to each other"
                    .into(),
            )
        }
        (_, Some(secret)) if secret.len() < 16 => {
            return Err("--relay-secret must be at least 16 bytes".into())
        }
        (_, Some(secret)) => {
            worker_config.relay = Some(RelayConfig {
                bind: args.relay_bind.unwrap_or(SocketAddr::new(args.bind, 0)),
                secret: secret.clone(),
            });
        }
        (None, None) => {}
    }
    let node_id = match &args.redis {
        Some(_) => {
            let id = args
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
            cluster::check_node_id(&id)?;
            Some(id)
        }
        None => None,
    };
    let metrics = telemetry::install()?;
    let worker = Worker::new(worker_config)
        .await
        .map_err(|e| format!("starting the media worker: {e}"))?;
    let media_addrs = worker.lock().await.local_addrs();

    let mut transport_config = WebRTCTransportConfig::default();
    transport_config.announced_ips = args.announce_ip.clone();
    if !args.ice_server.is_empty() {
        transport_config.configuration.ice_servers = vec![RTCIceServer {
            urls: args.ice_server.clone(),
            ..Default::default()
        }];
    }

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::from_files(cert, key).await?),
        _ if args.tls => {
            let mut ips = vec![args.bind];
            ips.extend(args.http_bind.filter(|ip| !ip.is_unspecified()));
            ips.extend(&args.announce_ip);
            Some(tls::self_signed(&ips).await?)
        }
        _ => None,
    };

    let (shutdown_tx, shutdown) = watch::channel(false);
    let live = Live::default();
    let mut media = MediaConfig::default();
    media.bandwidth_estimation = match args.bwe {
        Bwe::On => Some(args.bwe_initial_bps),
        Bwe::Off => None,
    };
    let record = record::RecordSettings::new(
        args.record_host.clone(),
        args.record_port,
        args.record_dir.clone(),
    );
    let rooms = Rooms::new(worker.clone(), media, record);
    let whip = rheomesh::whip::Whip::new(rheomesh::whip::WhipConfig {
        token: args.whip_token.clone(),
        transport: transport_config.clone(),
        ..Default::default()
    });
    let cluster = match (&args.redis, node_id) {
        (Some(url), Some(node)) => {
            let mut relay_addr = worker
                .lock()
                .await
                .relay_addr()
                .ok_or("the relay port is not listening")?;
            if relay_addr.ip().is_unspecified() {
                relay_addr.set_ip(args.bind);
            }
            let linger = Duration::from_millis(args.relay_linger_ms);
            Some(cluster::Cluster::start(url, node, relay_addr, linger, rooms.clone()).await?)
        }
        _ => None,
    };
    let whip_host = whip::Host::new(rooms.clone());
    let whip_routes = rheomesh::whip::axum::router(whip.clone(), whip_host.clone());
    let whep_routes = whip::whep_routes(whip.clone(), whip_host);
    let state = AppState {
        rooms,
        transport_config,
        shutdown,
        live: live.clone(),
        worker: worker.clone(),
        metrics,
    };
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/rheomesh.js", get(rheomesh_js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/socket", get(socket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .nest("/whip", whip_routes)
        .nest("/whep", whep_routes);

    let http_addr = SocketAddr::new(args.http_bind.unwrap_or(args.bind), args.port);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| format!("binding HTTP {http_addr}: {e}"))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(
        ?media_addrs,
        announced = ?args.announce_ip,
        ice_servers = ?args.ice_server,
        "media shards listening (UDP)"
    );

    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("watching SIGTERM: {e}"))?;
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let stop_http_future = async move {
        let _ = http_stopped.await;
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let note = match (&tls, &args.tls_cert) {
        (Some(_), None) => " (self-signed certificate)",
        _ => "",
    };
    println!("Rheomesh media server: open {scheme}://{http_addr}/?room=demo{note}");
    if let Some(c) = &cluster {
        println!("cluster node {}", c.node());
    }
    let limits = limits::Limits::new(
        args.max_connections.max(1),
        Duration::from_secs(args.header_timeout_secs.max(1)),
    );
    let mut server = tokio::spawn(async move {
        match tls {
            Some(config) => tls::serve(listener, config, limits, app, stop_http_future).await,
            None => {
                let listener = limits::CappedListener {
                    inner: listener,
                    limits,
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop_http_future)
                    .await
            }
        }
    });

    let signal_name = tokio::select! {
        r = &mut server => {
            return Err(match r {
                Ok(Ok(())) => "the HTTP server stopped unexpectedly".to_owned(),
                Ok(Err(e)) => format!("HTTP server: {e}"),
                Err(e) => format!("HTTP server task: {e}"),
            }
            .into());
        }
        r = tokio::signal::ctrl_c() => {
            r.map_err(|e| format!("watching Ctrl-C: {e}"))?;
            "SIGINT"
        }
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(
        signal = signal_name,
        sessions = live.count(),
        "shutting down (at most {} s)",
        SHUTDOWN_LIMIT.as_secs()
    );
    let deadline = Instant::now() + SHUTDOWN_LIMIT;
    // /healthz answers 503 from now on, /socket refuses new participants, and every
    // session closes its transports and its WebSocket.
    let _ = shutdown_tx.send(true);
    let graceful = async {
        if let Some(c) = &cluster {
            // The other nodes drop this node's tracks at their next resync.
            c.leave().await;
        }
        whip.close_all().await;
        live.wait_idle().await;
        tracing::info!("sessions closed");
        let _ = stop_http.send(());
        let _ = (&mut server).await;
        // Transports were closed by their sessions; the shards confirm it.
        let worker = worker.lock().await;
        loop {
            if worker.stats().await.sessions() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout_at(deadline, graceful) => {
            if r.is_err() {
                eprintln!(
                    "media_server: shutdown did not finish within {} s ({} session(s) left); \
                     exiting anyway",
                    SHUTDOWN_LIMIT.as_secs(),
                    live.count()
                );
                std::process::exit(1);
            }
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("media_server: second signal, exiting at once");
            std::process::exit(130);
        }
        _ = terminate.recv() => {
            eprintln!("media_server: second signal, exiting at once");
            std::process::exit(143);
        }
    }
    // The shards stop (their threads are joined) when the last handle goes: this one, and
    // those of tasks that the runtime drops on return.
    drop(worker);
    println!("bye");
    Ok(std::process::ExitCode::SUCCESS)
}

/// 200 while serving, 503 once the server is shutting down.
async fn healthz(State(state): State<AppState>) -> Response {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// Prometheus text exposition, refreshed from the shards and rooms on every scrape.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let body = telemetry::scrape(&state.metrics, &state.worker, &state.rooms).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SocketParams {
    room: Option<String>,
}

async fn socket(
    State(state): State<AppState>,
    Query(params): Query<SocketParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match params.room {
        Some(room) if !room.is_empty() && room.len() <= MAX_ROOM_NAME => room,
        Some(room) if !room.is_empty() => {
            return (StatusCode::BAD_REQUEST, "room name is too long\n").into_response()
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "missing query parameter: room (use /socket?room=NAME)\n",
            )
                .into_response()
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if *state.shutdown.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        )
            .into_response();
    }
    let AppState {
        rooms,
        transport_config,
        shutdown,
        live,
        ..
    } = state;
    // Counted from the upgrade on, so shutdown waits for sessions still starting.
    let guard = live.enter();
    // Signaling messages are small and rare: a 4 KiB read buffer instead of tungstenite's
    // 128 KiB default keeps an idle participant's socket cheap (larger messages still fit).
    ws.max_message_size(MAX_MESSAGE)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            session::run(socket, rooms, room, transport_config, shutdown).await;
            drop(guard);
        })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("static/index.html"),
    )
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("static/app.js"),
    )
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/style.css"))
}

async fn rheomesh_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../client/dist/rheomesh.js"),
    )
}
