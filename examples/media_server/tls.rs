//! HTTPS/WSS: `--tls` with a self-signed certificate generated at start (so browsers on
//! other machines get a secure context, required for camera and microphone), or a real
//! certificate from `--tls-cert`/`--tls-key` PEM files.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::net::TcpStream;

use crate::limits::{Guarded, Limits};

/// A self-signed certificate for `localhost` and the given addresses.
pub async fn self_signed(ips: &[IpAddr]) -> Result<RustlsConfig, Box<dyn std::error::Error>> {
    let mut names = vec!["localhost".to_owned()];
    names.extend(ips.iter().map(|ip| ip.to_string()));
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("generating the self-signed certificate: {e}"))?;
    let config = RustlsConfig::from_pem(
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .map_err(|e| format!("using the self-signed certificate: {e}"))?;
    Ok(config)
}

/// The certificate chain and private key of PEM files.
pub async fn from_files(cert: &Path, key: &Path) -> Result<RustlsConfig, String> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
    };
    // Read first: the errors then name the file that is missing or unreadable.
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    RustlsConfig::from_pem(cert_pem, key_pem)
        .await
        .map_err(|e| {
            format!(
            "--tls-cert {} / --tls-key {}: not a usable PEM certificate chain and private key: {e}",
            cert.display(),
            key.display()
        )
        })
}

/// Serve `app` over TLS on `listener` until `stop` resolves, then let open connections
/// finish (the caller bounds the whole shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: RustlsConfig,
    limits: Arc<Limits>,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop.await;
        on_stop.graceful_shutdown(None);
    });
    axum_server::from_tcp(listener.into_std()?)?
        .acceptor(RustlsAcceptor::new(config).acceptor(LimitAcceptor(limits)))
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// Admits each accepted TCP stream under the connection [`Limits`] before TLS.
#[derive(Clone)]
struct LimitAcceptor(Arc<Limits>);

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(match self.0.admit(stream) {
            Some(stream) => Ok((stream, service)),
            None => Err(std::io::Error::other("connection limit reached")),
        })
    }
}
