//! Silent death of a relay control link: the network between two workers stops carrying
//! anything (a cable pulled, a firewall dropping everything) while neither TCP socket is
//! closed, so no FIN or RST ever arrives. Only the link's heartbeat can tell. A TCP proxy
//! sits between worker A and worker B's relay port and stops forwarding in both directions
//! while holding both connections open. B must unpublish the relayed track within 5 s (its
//! subscriber told), both workers must end their relay sessions and links and leave
//! nothing behind, and a new relay over a working path must work.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::peer::PeerConfig;
use common::relay::{relay_stats, relay_worker};
use common::sfu::{connect_publisher, connect_subscriber, wait_for, wait_until};
use rheomesh::error::RelayError;
use rheomesh::worker::Worker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const SECRET: &str = "relay-silent-secret-0123456789";

async fn sessions(w: &Arc<Mutex<Worker>>) -> usize {
    w.lock().await.stats().await.sessions()
}

/// A TCP proxy to `target` on 127.0.0.1. While `forwarding`, bytes (and the end of a
/// stream) go through both ways; once it is cleared, everything read is swallowed, an
/// ended stream is not passed on, and no socket is ever closed (the black hole holds them
/// until the test ends). Connections made during the black hole are accepted and held,
/// never connected onwards.
struct Proxy {
    addr: SocketAddr,
    forwarding: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarding = Arc::new(AtomicBool::new(true));
        let fwd = forwarding.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let fwd = fwd.clone();
                tokio::spawn(async move {
                    if !fwd.load(Ordering::SeqCst) {
                        return hold(inbound).await;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::spawn(pipe(ir, ow, fwd.clone()));
                    tokio::spawn(pipe(or, iw, fwd));
                });
            }
        });
        Proxy { addr, forwarding }
    }

    /// Stop forwarding, both ways, for good.
    fn black_hole(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }
}

/// Copy `from` to `to` while forwarding; afterwards swallow what comes and hold both.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if forwarding.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if forwarding.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
        return;
    }
    hold((from, to)).await
}

/// Keep `what` (sockets) open until the test's runtime ends.
async fn hold<T>(what: T) {
    let _what = what;
    std::future::pending::<()>().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_link_unpublishes_within_5_s_and_a_new_path_relays_again() {
    let (wa, ra, _) = relay_worker(SECRET).await;
    let (wb, rb, addr_b) = relay_worker(SECRET).await;
    let proxy = Proxy::start(addr_b).await;
    let p = connect_publisher(&ra, None, Some("silent-v"), PeerConfig::default()).await;
    p.publishers[0]
        .relay_to(proxy.addr, rb.id())
        .await
        .expect("relayed through the proxy");
    let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
    let s = sub.subscribe("silent-v").await;
    p.peer.start_sending(100, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("silent-v")
            .distinct_counters
            >= 100)
        .await,
        "media flows to B"
    );
    let (sa, sb) = (relay_stats(&wa).await, relay_stats(&wb).await);
    assert_eq!((sa.links_out, sa.sessions_out), (1, 1), "A: {sa:?}");
    assert_eq!((sb.links_in, sb.sessions_in), (1, 1), "B: {sb:?}");

    // The network goes silent: nothing crosses, nothing is closed. Each worker must find
    // the link dead by itself (no TCP close reaches either), end its sessions, and B must
    // unpublish the relayed track (its subscriber told).
    let t0 = Instant::now();
    proxy.black_hole();
    let (mut b_unpublished, mut b_ended, mut a_ended) = (None, None, None);
    let deadline = t0 + Duration::from_secs(5);
    while (b_unpublished.is_none() || b_ended.is_none() || a_ended.is_none())
        && Instant::now() < deadline
    {
        if b_unpublished.is_none() && rb.publisher_ids().is_empty() && s.is_closed() {
            b_unpublished = Some(t0.elapsed());
        }
        let sb = relay_stats(&wb).await;
        if b_ended.is_none() && sb.links_in == 0 && sb.sessions_in == 0 {
            b_ended = Some(t0.elapsed());
        }
        let sa = relay_stats(&wa).await;
        if a_ended.is_none() && sa.links_out == 0 && sa.sessions_out == 0 {
            a_ended = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms = |t: Option<Duration>| t.map(|t| t.as_millis().to_string()).unwrap_or("-".into());
    println!(
        "after the link went silent: B unpublished the relayed track and closed its \
         subscriber at {} ms, B's relay link and session ended at {} ms, A's at {} ms",
        ms(b_unpublished),
        ms(b_ended),
        ms(a_ended)
    );
    assert!(
        b_unpublished.is_some(),
        "B unpublished within 5 s: {:?}, subscriber closed: {}",
        rb.publisher_ids(),
        s.is_closed()
    );
    let (sa, sb) = (relay_stats(&wa).await, relay_stats(&wb).await);
    assert!(
        b_ended.is_some() && a_ended.is_some(),
        "relay ended within 5 s: A {sa:?}, B {sb:?}"
    );
    // Nothing left: on A only the publisher's own transport (its relay session closed), on
    // B only the subscriber's.
    let left = wait_for(Duration::from_secs(5), || async {
        sessions(&wa).await == 1 && sessions(&wb).await == 1
    })
    .await;
    assert!(
        left,
        "sessions left: A {} (the publisher's is 1), B {} (the subscriber's is 1)",
        sessions(&wa).await,
        sessions(&wb).await
    );

    // Through the black hole a relay fails, in bounded time (the handshake times out).
    let t1 = Instant::now();
    let e = p.publishers[0]
        .relay_to(proxy.addr, rb.id())
        .await
        .unwrap_err();
    println!(
        "relay_to through the black hole failed after {} ms: {e}",
        t1.elapsed().as_millis()
    );
    assert!(matches!(e, RelayError::Unreachable(_)), "{e}");
    assert!(t1.elapsed() < Duration::from_secs(10));

    // A working path (B's relay port itself) relays again.
    p.publishers[0]
        .relay_to(addr_b, rb.id())
        .await
        .expect("relayed again over a working path");
    assert_eq!(rb.publisher_ids(), vec!["silent-v".to_string()]);
    let s2 = sub.subscribe("silent-v").await;
    let before = sub.peer.received("silent-v").distinct_counters;
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("silent-v")
            .distinct_counters
            >= before + 100)
        .await,
        "media flows again"
    );
    let (sa, sb) = (relay_stats(&wa).await, relay_stats(&wb).await);
    assert_eq!((sa.links_out, sa.sessions_out), (1, 1), "A: {sa:?}");
    assert_eq!((sb.links_in, sb.sessions_in), (1, 1), "B: {sb:?}");

    // And it ends cleanly: the publisher leaves, nothing is left on A, on B only the
    // subscriber's transport.
    p.peer.stop_sending();
    p.transport.close().await;
    assert!(
        wait_until(Duration::from_secs(5), || rb.publisher_ids().is_empty()
            && s2.is_closed())
        .await
    );
    assert!(
        wait_for(Duration::from_secs(5), || async {
            sessions(&wa).await == 0 && sessions(&wb).await == 1
        })
        .await,
        "sessions left: A {}, B {}",
        sessions(&wa).await,
        sessions(&wb).await
    );
}
