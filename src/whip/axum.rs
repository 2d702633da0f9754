//! [axum](https://docs.rs/axum) routers serving a [`Whip`] endpoint (feature `axum`).
//! [`router`] (WHIP): `POST /{room}/{stream}` creates a session in the router
//! [`WhipHost::router`] gives for `room`; [`whep_router`] (WHEP): `POST /{room}/{stream}`
//! plays the tracks [`WhipHost::whep_tracks`] names. Both: `PATCH` / `DELETE` on
//! `/{room}/{stream}/{resource}` (the `Location` answered), `OPTIONS` on both. Nest them
//! where they should live:
//!
//! ```ignore
//! let app = axum::Router::new()
//!     .nest("/whip", rheomesh::whip::axum::router(whip.clone(), host.clone()))
//!     .nest("/whep", rheomesh::whip::axum::whep_router(whip, host));
//! ```

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

use super::{Request, Response, Whip};
use crate::publisher::Publisher;
use crate::router::Router;

/// What the application decides for the WHIP router: which [`Router`] a room is, and what
/// to do with published tracks.
pub trait WhipHost: Clone + Send + Sync + 'static {
    /// The router of `room`; `None` answers `404`.
    fn router(&self, room: String) -> impl Future<Output = Option<Router>> + Send;

    /// Session `resource` of stream `stream` published `publishers` in `room` (e.g. tell
    /// the room's participants). Called once per session, after its `201`.
    fn published(
        &self,
        room: String,
        stream: String,
        resource: String,
        publishers: Vec<Publisher>,
    ) {
        let _ = (room, stream, resource, publishers);
    }

    /// WHEP: the router of `room` and the ids of the tracks a viewer of `stream` gets;
    /// `None` answers `404`. By default, the published track whose id is `stream`.
    fn whep_tracks(
        &self,
        room: String,
        stream: String,
    ) -> impl Future<Output = Option<(Router, Vec<String>)>> + Send {
        let host = self.clone();
        async move {
            let router = host.router(room).await?;
            Some((router, vec![stream]))
        }
    }

    /// A `POST` for `room` and `stream` was refused after [`router`](Self::router) gave a
    /// router (bad offer, conflict, too many sessions): undo what `router` prepared.
    fn refused(&self, room: String, stream: String) {
        let _ = (room, stream);
    }
}

#[derive(Clone)]
struct AppState<H> {
    whip: Whip,
    host: H,
}

/// The WHIP routes of `whip`, with `host` choosing the routers.
pub fn router<H: WhipHost>(whip: Whip, host: H) -> axum::Router {
    routes(post(post_offer::<H>), whip, host)
}

/// `POST` by `post_route` on the collection, the shared resource routes.
fn routes<H: WhipHost>(
    post_route: axum::routing::MethodRouter<AppState<H>>,
    whip: Whip,
    host: H,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/{room}/{stream}",
            post_route
                .options(options::<H>)
                .fallback(not_allowed_collection::<H>),
        )
        .route(
            "/{room}/{stream}/{resource}",
            axum::routing::patch(patch::<H>)
                .delete(delete::<H>)
                .options(options::<H>)
                .fallback(not_allowed_resource::<H>),
        )
        .with_state(AppState { whip, host })
}

/// The WHEP routes of `whip` (sessions share its table, its token and its limits), with
/// `host` naming the tracks of a stream.
pub fn whep_router<H: WhipHost>(whip: Whip, host: H) -> axum::Router {
    routes(post(post_whep::<H>), whip, host)
}

async fn post_whep<H: WhipHost>(
    State(s): State<AppState<H>>,
    Path((room, stream)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let req = match authorized(&s.whip, &headers, &body) {
        Ok(r) => r,
        Err(r) => return reply(r),
    };
    let Some((router, ids)) = s.host.whep_tracks(room, stream).await else {
        return reply(s.whip.error(404, "no such stream"));
    };
    match s.whip.post_whep(&router, uri.path(), &ids, &req).await {
        Ok(viewing) => reply(viewing.response),
        Err(r) => reply(r),
    }
}

fn request<'a>(headers: &'a HeaderMap, body: &'a str) -> Request<'a> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Request {
        content_type: get("content-type"),
        authorization: get("authorization"),
        if_match: get("if-match"),
        body,
    }
}

fn reply(r: Response) -> axum::response::Response {
    r.into_response()
}

/// A [`Response`] as axum's: its status, headers and body.
impl IntoResponse for Response {
    fn into_response(self) -> axum::response::Response {
        let r = self;
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        for (name, value) in r.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
        (status, headers, r.body).into_response()
    }
}

fn utf8<'a>(whip: &Whip, body: &'a Bytes) -> Result<&'a str, Response> {
    std::str::from_utf8(body).map_err(|_| whip.error(400, "the body is not UTF-8"))
}

/// A `POST`'s request, once its body is text and its token right: checked before anything
/// else, so that an unauthorized client learns nothing.
fn authorized<'a>(
    whip: &Whip,
    headers: &'a HeaderMap,
    body: &'a Bytes,
) -> Result<Request<'a>, Response> {
    let req = request(headers, utf8(whip, body)?);
    whip.authorize(&req)?;
    Ok(req)
}

async fn post_offer<H: WhipHost>(
    State(s): State<AppState<H>>,
    Path((room, stream)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let req = match authorized(&s.whip, &headers, &body) {
        Ok(r) => r,
        Err(r) => return reply(r),
    };
    let Some(router) = s.host.router(room.clone()).await else {
        return reply(s.whip.error(404, "no such room"));
    };
    match s.whip.post(&router, uri.path(), &req).await {
        Ok(published) => {
            s.host
                .published(room, stream, published.resource, published.publishers);
            reply(published.response)
        }
        Err(r) => {
            s.host.refused(room, stream);
            reply(r)
        }
    }
}

async fn patch<H: WhipHost>(
    State(s): State<AppState<H>>,
    Path((_room, _stream, resource)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let body = match utf8(&s.whip, &body) {
        Ok(b) => b,
        Err(r) => return reply(r),
    };
    reply(s.whip.patch(&resource, &request(&headers, body)).await)
}

async fn delete<H: WhipHost>(
    State(s): State<AppState<H>>,
    Path((_room, _stream, resource)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    reply(s.whip.delete(&resource, &request(&headers, "")).await)
}

async fn options<H: WhipHost>(State(s): State<AppState<H>>) -> axum::response::Response {
    reply(s.whip.options())
}

async fn not_allowed_collection<H: WhipHost>(
    State(s): State<AppState<H>>,
) -> axum::response::Response {
    reply(s.whip.method_not_allowed("POST, OPTIONS"))
}

async fn not_allowed_resource<H: WhipHost>(
    State(s): State<AppState<H>>,
) -> axum::response::Response {
    reply(s.whip.method_not_allowed("PATCH, DELETE, OPTIONS"))
}
