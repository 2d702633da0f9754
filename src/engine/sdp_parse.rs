//! SDP parsing off the shards. Parsing a large SDP (a 128-m-line offer is ≈ 230 KB) is the
//! costliest part of a negotiation, and a shard is busy with everybody's media: the API
//! parses an offer or answer here first ([`parse_offer`], [`parse_answer`]), after its size
//! limits ([`check_sdp_limits`]), on a few low-priority threads, and the shard only applies
//! the result. The in-memory harness parses where it is ([`parse_offer_here`]).

use std::sync::OnceLock;

use str0m::change::{SdpAnswer, SdpOffer};

use super::sdp::check_sdp_limits;
use crate::error::NegotiationError;

/// A job for the parse threads.
type ParseJob = Box<dyn FnOnce() + Send>;

/// The SDP parse threads: one per two cores, started on first use, at a lower scheduling
/// priority than everything else (nice 10 on Linux). A 200 KB offer takes milliseconds
/// to parse and a client may send many: the shards, one per core, keep the CPU for
/// everybody's media, and the parses get what is left.
fn parse_threads() -> &'static std::sync::mpsc::Sender<ParseJob> {
    static JOBS: OnceLock<std::sync::mpsc::Sender<ParseJob>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<ParseJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..(cores / 2).max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rheomesh-sdp-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("starting an SDP parse thread: {e}");
            }
        }
        tx
    })
}

/// Lower the calling thread's scheduling priority (Linux: per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and id 0 changes the calling thread's nice
    // value on Linux; it reads no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Check `sdp`'s limits and parse it on the parse threads ([`parse_threads`]): parsing is
/// the costliest part of accepting a large SDP, and a shard is busy with everybody's media.
async fn parse_off_shard<T: Send + 'static>(
    sdp: String,
    parse: fn(&str) -> Result<T, NegotiationError>,
) -> Result<(String, T), NegotiationError> {
    check_sdp_limits(&sdp)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: ParseJob = Box::new(move || {
        // A parser panic (a str0m bug a hostile SDP found) fails this negotiation only, and
        // the parse thread lives on.
        let parsed = std::panic::catch_unwind(|| parse(&sdp)).unwrap_or_else(|_| {
            Err(NegotiationError::SessionFailed(
                "the SDP parser panicked".into(),
            ))
        });
        let _ = tx.send(parsed.map(|parsed| (sdp, parsed)));
    });
    if parse_threads().send(job).is_err() {
        return Err(NegotiationError::SessionFailed(
            "no SDP parse thread".into(),
        ));
    }
    rx.await
        .map_err(|_| NegotiationError::SessionFailed("SDP parsing failed".into()))?
}

/// Parse an offer (its limits checked first), where the caller is.
pub(crate) fn parse_offer_here(sdp: &str) -> Result<SdpOffer, NegotiationError> {
    check_sdp_limits(sdp)?;
    SdpOffer::from_sdp_string(sdp).map_err(|e| NegotiationError::InvalidSdp(e.to_string()))
}

/// Parse an answer (its limits checked first), where the caller is.
pub(crate) fn parse_answer_here(sdp: &str) -> Result<SdpAnswer, NegotiationError> {
    check_sdp_limits(sdp)?;
    SdpAnswer::from_sdp_string(sdp).map_err(|e| NegotiationError::InvalidSdp(e.to_string()))
}

/// An offer's text and its parse, made on a parse thread (see [`parse_off_shard`]).
pub(crate) async fn parse_offer(sdp: String) -> Result<(String, SdpOffer), NegotiationError> {
    parse_off_shard(sdp, parse_offer_here).await
}

/// An answer's text and its parse, made on a parse thread (see [`parse_off_shard`]).
pub(crate) async fn parse_answer(sdp: String) -> Result<(String, SdpAnswer), NegotiationError> {
    parse_off_shard(sdp, parse_answer_here).await
}
