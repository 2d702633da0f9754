//! # Rheomesh
//!
//! A WebRTC SFU (selective forwarding unit) library for Rust servers. Embed it in your
//! server, keep your own signaling, and Rheomesh forwards audio and video between the
//! peers of each [`router::Router`] without transcoding.
//!
//! The API follows the original Rheomesh: a [`worker::Worker`] owns the engine (one shard,
//! i.e. one thread with its own UDP socket, per core); a [`router::Router`] is a meeting
//! room; browsers connect through [`transport::PublishTransport`] and
//! [`transport::SubscribeTransport`]; published tracks are [`publisher::Publisher`]s and
//! forwarded tracks [`subscriber::Subscriber`]s.
//!
//! ```no_run
//! use rheomesh::config::{MediaConfig, WebRTCTransportConfig, WorkerConfig};
//! use rheomesh::worker::Worker;
//!
//! # async fn run() {
//! let worker = Worker::new(WorkerConfig::default()).await.unwrap();
//! let router = worker.lock().await.new_router(MediaConfig::default());
//! let publish_transport = router
//!     .create_publish_transport(WebRTCTransportConfig::default())
//!     .await;
//! # }
//! ```
//!
//! Layers (see `docs/DESIGN.md` in the source repository): the async API layer (this crate's public
//! modules) sends commands to the engine's shards; the shards own the str0m sessions and
//! the packet path; [`forward`] and [`wire`] are pure helpers used by the packet path.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

pub mod config;
pub mod data;
pub mod error;
pub mod forward;
pub mod publisher;
pub mod relay;
pub mod router;
pub mod signal;
pub mod stats;
pub mod subscriber;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod transport;
pub mod whip;
pub mod wire;
pub mod worker;

mod engine;

pub use signal::{IceCandidate, IceCandidateInit, SdpType, SessionDescription};
