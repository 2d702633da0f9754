//! Example media server: a web page and a WebSocket signaling endpoint (`PROTOCOL.md`) on
//! top of the rheomesh library. One room = one rheomesh `Router`.
//!
//! ```sh
//! cargo run --release --example media_server -- --port 3000
//! # open http://127.0.0.1:3000/?room=demo in two tabs
//! ```
//!
//! This file parses arguments, starts the worker and serves HTTP; `room.rs` keeps the
//! rooms, `session.rs` handles one WebSocket, `protocol.rs` defines its messages.

mod protocol;
mod room;
mod session;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use rheomesh::config::{WebRTCTransportConfig, WorkerConfig};
use rheomesh::worker::Worker;
use serde::Deserialize;
use tokio::sync::watch;

use crate::room::Rooms;

/// Longest room name accepted.
const MAX_ROOM_NAME: usize = 128;
/// Largest WebSocket message accepted (an SDP is at most 256 KiB).
const MAX_MESSAGE: usize = 512 * 1024;

/// Rheomesh example media server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// IP address for HTTP and for the media (UDP) sockets; must be a concrete address.
    #[arg(long, env = "RHEOMESH_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
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
}

#[derive(Clone)]
struct AppState {
    rooms: Rooms,
    transport_config: WebRTCTransportConfig,
    shutdown: watch::Receiver<bool>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let mut worker_config = WorkerConfig::default();
    worker_config.bind_ip = args.bind;
    worker_config.port_min = args.rtc_port;
    if let Some(shards) = args.shards {
        if shards == 0 {
            return Err("--shards must be at least 1".into());
        }
        worker_config.shards = shards;
    }
    let worker = Worker::new(worker_config)
        .await
        .map_err(|e| format!("starting the media worker: {e}"))?;
    let media_addrs = worker.lock().await.local_addrs();

    let mut transport_config = WebRTCTransportConfig::default();
    transport_config.announced_ips = args.announce_ip.clone();

    let (shutdown_tx, shutdown) = watch::channel(false);
    let state = AppState {
        rooms: Rooms::new(worker.clone()),
        transport_config,
        shutdown,
    };
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/rheomesh.js", get(rheomesh_js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/socket", get(socket))
        .with_state(state);

    let http_addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| format!("binding HTTP {http_addr}: {e}"))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(?media_addrs, announced = ?args.announce_ip, "media shards listening (UDP)");

    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        // Sessions close their WebSockets (and transports) on this signal.
        let _ = shutdown_tx.send(true);
    };
    if args.tls {
        let mut ips = vec![args.bind];
        ips.extend(&args.announce_ip);
        let config = tls::self_signed(&ips).await?;
        println!(
            "Rheomesh media server: open https://{http_addr}/?room=demo (self-signed certificate)"
        );
        tls::serve(listener, config, app, shutdown).await?;
    } else {
        println!("Rheomesh media server: open http://{http_addr}/?room=demo");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    }
    // Let closed sessions' transports finish tearing down before the worker goes.
    drop(worker);
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("bye");
    Ok(())
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
    let AppState {
        rooms,
        transport_config,
        shutdown,
    } = state;
    // Signaling messages are small and rare: a 4 KiB read buffer instead of tungstenite's
    // 128 KiB default keeps an idle participant's socket cheap (larger messages still fit).
    ws.max_message_size(MAX_MESSAGE)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session::run(socket, rooms, room, transport_config, shutdown))
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
