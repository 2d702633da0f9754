//! One relay control connection between two workers, after its handshake: authenticated
//! frames ([`wire`](super::wire)) both ways, requests with replies, and a heartbeat. The
//! link closes (and says so through [`Link::closed`]) when the TCP connection ends, a
//! frame fails authentication, or no reply to a ping comes for [`DEAD_AFTER`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::wire::{self, Msg, Side};
use super::Counters;
use crate::error::RelayError;

/// How long a handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat period.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A link whose pings go unanswered this long is dead.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(3);
/// How long a request waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest hello frame (tag and JSON): what an unauthenticated peer can make us read.
const MAX_HELLO: usize = 512;
/// Frames waiting to be written.
const OUTBOX: usize = 1024;

/// A live control connection.
pub(crate) struct Link {
    pub(crate) peer: SocketAddr,
    out: mpsc::Sender<Msg>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Msg>>>,
    next_req: AtomicU64,
    closed: watch::Sender<bool>,
}

/// The reply of a request: the answer SDP, if any.
pub(crate) type ReplySdp = Option<String>;

impl Link {
    /// Connect to `peer` and authenticate with `secret`. Returns the link and its
    /// requests from the other side.
    pub(crate) async fn connect(
        peer: SocketAddr,
        secret: &[u8],
        counters: Arc<Counters>,
    ) -> Result<(Arc<Link>, mpsc::Receiver<Msg>), RelayError> {
        let run = async {
            let mut stream = TcpStream::connect(peer)
                .await
                .map_err(|e| RelayError::Unreachable(format!("{peer}: {e}")))?;
            let _ = stream.set_nodelay(true);
            let hello_key = wire::hello_key(secret);
            let mine = wire::nonce();
            let hello = Msg::Hello {
                version: wire::VERSION,
                nonce: mine.clone(),
            };
            stream
                .write_all(&wire::encode(&hello_key, Side::Connector, 0, &hello))
                .await
                .map_err(|e| RelayError::Unreachable(e.to_string()))?;
            let theirs = match read_frame(&mut stream, &hello_key, Side::Listener, 0).await {
                Ok(Msg::Hello { version, nonce })
                    if version == wire::VERSION && wire::is_nonce(&nonce) =>
                {
                    nonce
                }
                Ok(_) => return Err(RelayError::Refused("not a relay hello".into())),
                Err(ReadError::Frame(_)) => {
                    counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(RelayError::Refused(
                        "the other worker did not authenticate (wrong secret?)".into(),
                    ));
                }
                Err(ReadError::Io(e)) => {
                    return Err(RelayError::Refused(format!(
                        "connection closed during the handshake (wrong secret?): {e}"
                    )))
                }
            };
            let key = wire::session_key(secret, &mine, &theirs);
            Ok((stream, key))
        };
        let (stream, key) = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
            .await
            .map_err(|_| RelayError::Unreachable(format!("{peer}: handshake timed out")))??;
        Ok(Link::start(stream, peer, key, Side::Connector, counters))
    }

    /// Authenticate a connection accepted from `peer`.
    pub(crate) async fn accept(
        mut stream: TcpStream,
        peer: SocketAddr,
        secret: &[u8],
        counters: Arc<Counters>,
    ) -> Result<(Arc<Link>, mpsc::Receiver<Msg>), RelayError> {
        let _ = stream.set_nodelay(true);
        let run = async {
            let hello_key = wire::hello_key(secret);
            let theirs = match read_frame(&mut stream, &hello_key, Side::Connector, 0).await {
                Ok(Msg::Hello { version, nonce })
                    if version == wire::VERSION && wire::is_nonce(&nonce) =>
                {
                    nonce
                }
                Ok(_) => {
                    counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Err(RelayError::Refused("not a relay hello".into()));
                }
                Err(ReadError::Frame(wire::FrameError::BadTag)) => {
                    counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(RelayError::Refused("authentication failed".into()));
                }
                Err(e) => {
                    counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Err(RelayError::Refused(format!("bad hello: {e:?}")));
                }
            };
            let mine = wire::nonce();
            let hello = Msg::Hello {
                version: wire::VERSION,
                nonce: mine.clone(),
            };
            stream
                .write_all(&wire::encode(&hello_key, Side::Listener, 0, &hello))
                .await
                .map_err(|e| RelayError::Refused(e.to_string()))?;
            Ok(wire::session_key(secret, &theirs, &mine))
        };
        let key = match tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await {
            Ok(r) => r?,
            Err(_) => {
                counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                return Err(RelayError::Refused("handshake timed out".into()));
            }
        };
        Ok(Link::start(stream, peer, key, Side::Listener, counters))
    }

    fn start(
        stream: TcpStream,
        peer: SocketAddr,
        key: hmac::Key,
        me: Side,
        counters: Arc<Counters>,
    ) -> (Arc<Link>, mpsc::Receiver<Msg>) {
        let (out_tx, mut out_rx) = mpsc::channel::<Msg>(OUTBOX);
        let (in_tx, in_rx) = mpsc::channel::<Msg>(OUTBOX);
        let link = Arc::new(Link {
            peer,
            out: out_tx,
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            closed: watch::channel(false).0,
        });
        let (mut reader, mut writer) = stream.into_split();
        let them = match me {
            Side::Connector => Side::Listener,
            Side::Listener => Side::Connector,
        };
        let key = Arc::new(key);
        // Writer: frames numbered from 1 (the hello was 0).
        let wkey = key.clone();
        let wlink = Arc::downgrade(&link);
        let mut wclosed = link.closed.subscribe();
        tokio::spawn(async move {
            let mut seq = 1u64;
            loop {
                let msg = tokio::select! {
                    m = out_rx.recv() => m,
                    _ = wclosed.wait_for(|c| *c) => None,
                };
                let Some(msg) = msg else { break };
                let frame = wire::encode(&wkey, me, seq, &msg);
                seq += 1;
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
            if let Some(l) = wlink.upgrade() {
                l.close();
            }
        });
        // Reader: replies to their requests, the rest to the handler.
        let rlink = Arc::downgrade(&link);
        let mut closed = link.closed.subscribe();
        tokio::spawn(async move {
            let mut seq = 1u64;
            loop {
                let frame = tokio::select! {
                    f = read_frame(&mut reader, &key, them, seq) => f,
                    _ = closed.wait_for(|c| *c) => break,
                };
                seq += 1;
                let msg = match frame {
                    Ok(m) => m,
                    Err(ReadError::Frame(e)) => {
                        tracing::warn!(peer = %peer, "relay link closed: {e}");
                        counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(ReadError::Io(_)) => break,
                };
                let Some(l) = rlink.upgrade() else { break };
                match msg {
                    Msg::Reply { req, .. } => {
                        let waiter = l
                            .pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&req);
                        if let Some(w) = waiter {
                            let _ = w.send(msg);
                        }
                    }
                    Msg::Ping { req } => {
                        let _ = l.out.try_send(Msg::Reply {
                            req,
                            sdp: None,
                            error: None,
                        });
                    }
                    Msg::Hello { .. } => {
                        counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    other => {
                        if in_tx.send(other).await.is_err() {
                            break;
                        }
                    }
                }
            }
            if let Some(l) = rlink.upgrade() {
                l.close();
            }
        });
        // Heartbeat.
        let hlink = Arc::downgrade(&link);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING_EVERY);
            loop {
                tick.tick().await;
                let Some(l) = hlink.upgrade() else { break };
                if l.is_closed() {
                    break;
                }
                tokio::spawn(async move {
                    let alive =
                        tokio::time::timeout(DEAD_AFTER, l.request(|req| Msg::Ping { req })).await;
                    if !matches!(alive, Ok(Ok(_))) && !l.is_closed() {
                        tracing::warn!(peer = %l.peer, "relay link dead: no pong");
                        l.close();
                    }
                });
            }
        });
        (link, in_rx)
    }

    /// Send a request made by `make` (given its id) and wait for its reply.
    pub(crate) async fn request(
        &self,
        make: impl FnOnce(u64) -> Msg,
    ) -> Result<ReplySdp, RelayError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req, tx);
        if self.is_closed() || self.out.send(make(req)).await.is_err() {
            self.forget(req);
            return Err(RelayError::LinkClosed);
        }
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        self.forget(req);
        match reply {
            Ok(Ok(Msg::Reply {
                error: None, sdp, ..
            })) => Ok(sdp),
            Ok(Ok(Msg::Reply { error: Some(e), .. })) => Err(RelayError::Refused(e)),
            Ok(_) => Err(RelayError::LinkClosed),
            Err(_) => Err(RelayError::Unreachable("no reply in time".into())),
        }
    }

    fn forget(&self, req: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&req);
    }

    /// Send a message that gets no reply (dropped if the link is closed or backed up).
    pub(crate) fn send(&self, msg: Msg) {
        let _ = self.out.try_send(msg);
    }

    /// Reply to request `req`.
    pub(crate) async fn reply(&self, req: u64, result: Result<ReplySdp, String>) {
        let msg = match result {
            Ok(sdp) => Msg::Reply {
                req,
                sdp,
                error: None,
            },
            Err(e) => Msg::Reply {
                req,
                sdp: None,
                error: Some(e),
            },
        };
        let _ = self.out.send(msg).await;
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Close the link (idempotent): pending requests fail.
    pub(crate) fn close(&self) {
        if self.closed.send_replace(true) {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Resolves once the link is closed.
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Frame(wire::FrameError),
}

/// Read frame number `seq` from `from` off `stream` (the hello on the whole stream, the
/// rest on the read half).
async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
    key: &hmac::Key,
    from: Side,
    seq: u64,
) -> Result<Msg, ReadError> {
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(ReadError::Io)?;
    let n = wire::frame_len(prefix).map_err(ReadError::Frame)?;
    // Before the handshake, nothing larger than a hello is read (and allocated).
    if seq == 0 && n > MAX_HELLO {
        return Err(ReadError::Frame(wire::FrameError::Length(n)));
    }
    let mut body = vec![0u8; n];
    stream.read_exact(&mut body).await.map_err(ReadError::Io)?;
    wire::decode(key, from, seq, &body).map_err(ReadError::Frame)
}
