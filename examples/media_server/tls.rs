//! `--tls`: HTTPS/WSS with a self-signed certificate generated at start, so browsers on
//! other machines get a secure context (required for camera and microphone).

use std::net::IpAddr;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

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
    .await?;
    Ok(config)
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves, then let connections finish
/// (WebSockets close themselves on the same signal) for at most a few seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: RustlsConfig,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_shutdown.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
}
