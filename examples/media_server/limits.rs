//! Connection limits of the HTTP/WebSocket listener. At most `--max-connections` are open at
//! once: further ones are closed as soon as they are accepted, counted, and logged (once a
//! second at most), so a flood of connections cannot take every file descriptor and lock
//! real clients out. And a connection must have sent a whole request within
//! `--header-timeout-secs` of being accepted (the server has started its response by then):
//! a client that sends half a request and waits holds its descriptor for that long only.
//!
//! Both apply below HTTP, on the accepted TCP stream ([`Guarded`]): the plain listener is
//! [`CappedListener`]; the TLS listener takes the same [`Limits`] in its acceptor, where
//! rustls's handshake timeout bounds a stalled handshake (the request deadline is disarmed
//! by the handshake's own bytes there).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// The limits shared by every accepted connection.
pub struct Limits {
    permits: Arc<Semaphore>,
    max: usize,
    header_timeout: Duration,
    /// When the last "limit reached" line was logged (ms since `start`), to log once a second.
    last_log_ms: AtomicU64,
    start: Instant,
}

impl Limits {
    pub fn new(max_connections: usize, header_timeout: Duration) -> Arc<Limits> {
        Arc::new(Limits {
            permits: Arc::new(Semaphore::new(max_connections)),
            max: max_connections,
            header_timeout,
            last_log_ms: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// `stream` with its share of the limits, or `None` (drop it: that closes it) when
    /// `max` connections are open.
    pub fn admit<S>(&self, stream: S) -> Option<Guarded<S>> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Guarded {
                inner: stream,
                _permit: permit,
                deadline: Some(Box::pin(tokio::time::sleep(self.header_timeout))),
            }),
            Err(_) => {
                metrics::counter!("rheomesh_http_connections_refused_total").increment(1);
                let now = self.start.elapsed().as_millis() as u64;
                let last = self.last_log_ms.load(Ordering::Relaxed);
                if (now >= last + 1000 || last == 0)
                    && self
                        .last_log_ms
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        "connection limit reached: {} connections open (--max-connections): \
                         closing new connections until some end",
                        self.max
                    );
                }
                None
            }
        }
    }
}

/// A TCP listener that admits connections under [`Limits`].
pub struct CappedListener {
    pub inner: TcpListener,
    pub limits: Arc<Limits>,
}

impl axum::serve::Listener for CappedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Some(io) = self.limits.admit(stream) {
                        return (io, addr);
                    }
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                    // little rather than spin, then go on.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted stream holding its connection permit (released when it is dropped) and, until
/// the server first writes to it, the request deadline: a read after the deadline fails,
/// which makes hyper close the connection.
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                self.deadline = None;
                metrics::counter!("rheomesh_http_request_timeouts_total").increment(1);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request in time",
                )));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The server writes once it has a request (or, under TLS, during the handshake).
        self.deadline = None;
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
