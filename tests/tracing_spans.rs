//! Tracing spans, recorded by a real `tracing-subscriber` registry with a layer that keeps
//! every span's fields and every event's span scope: what the shards log for a transport is
//! inside a `session` span (transport id, router id, role) inside the `shard` span, and
//! forwarding media logs nothing at info or above.
//!
//! Its own test binary: the recording subscriber is the process-wide default.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::peer::PeerConfig;
use common::sfu::{connect_publisher, connect_subscriber, setup, wait_until};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Default, Clone)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// One recorded event: its level, fields, and its spans from the root (name, fields).
#[derive(Clone, Debug)]
struct Recorded {
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
    scope: Vec<(String, BTreeMap<String, String>)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl Recorder {
    fn events(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let f = span
                            .extensions()
                            .get::<Fields>()
                            .cloned()
                            .unwrap_or_default();
                        (span.name().to_string(), f.0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields: fields.0,
            scope,
        });
    }
}

fn in_span(e: &Recorded, name: &str, fields: &[(&str, &str)]) -> bool {
    e.scope.iter().any(|(n, f)| {
        n == name
            && fields
                .iter()
                .all(|(k, v)| f.get(*k).map(String::as_str) == Some(*v))
    })
}

fn important(e: &Recorded) -> bool {
    e.level <= Level::INFO
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_work_is_logged_in_session_spans() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(EnvFilter::new("debug"))
            .with(recorder.clone()),
    )
    .expect("the only subscriber of this test binary");

    let (_worker, router) = setup(1).await;
    let router_id = router.id().to_string();
    let publisher = connect_publisher(&router, None, Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(100, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
            >= 50)
        .await,
        "media flows"
    );

    // Steady forwarding: a few hundred packets, no info-or-louder events.
    let before = recorder.events().iter().filter(|e| important(e)).count();
    let received = sub.peer.received("v").packets;
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
            >= received + 300)
        .await,
        "media keeps flowing"
    );
    let loud: Vec<Recorded> = recorder
        .events()
        .into_iter()
        .filter(important)
        .skip(before)
        .collect();
    assert!(
        loud.is_empty(),
        "forwarding 300 packets logged at info or above: {loud:#?}"
    );

    let sub_id = sub.transport.id().to_string();
    let pub_id = publisher.transport.id().to_string();
    sub.transport.close().await;
    assert!(
        wait_until(Duration::from_secs(5), || recorder.events().iter().any(
            |e| {
                e.fields.get("message").map(String::as_str) == Some("session closed")
                    && in_span(e, "session", &[("transport", &sub_id)])
            }
        ))
        .await,
        "the subscriber's teardown is logged in its span"
    );

    let events = recorder.events();
    let shard = [("shard", "0")];
    for (id, role) in [(&pub_id, "publish"), (&sub_id, "subscribe")] {
        let session = [
            ("transport", id.as_str()),
            ("router", router_id.as_str()),
            ("role", role),
        ];
        let on_shard: Vec<&Recorded> = events
            .iter()
            .filter(|e| in_span(e, "session", &session))
            .collect();
        assert!(
            !on_shard.is_empty(),
            "events in the {role} session span {session:?}"
        );
        for e in &on_shard {
            assert!(
                in_span(e, "shard", &shard),
                "session spans are children of the shard span: {e:?}"
            );
            assert_eq!(
                e.scope.last().map(|(n, _)| n.as_str()),
                Some("session"),
                "innermost span: {e:?}"
            );
        }
        // str0m's own logs for the session are tied to it too.
        assert!(
            on_shard.iter().any(|e| e.target.starts_with("str0m")),
            "str0m events in the {role} session span"
        );
    }
    // The API side's task for a transport runs in a `transport` span with the same fields.
    assert!(
        wait_until(Duration::from_secs(5), || recorder.events().iter().any(
            |e| {
                e.fields.get("message").map(String::as_str) == Some("transport closed")
                    && in_span(
                        e,
                        "transport",
                        &[("transport", &sub_id), ("role", "subscribe")],
                    )
            }
        ))
        .await,
        "the API side's close is logged in the transport span"
    );
}
