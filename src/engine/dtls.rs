//! DTLS for the shards' sessions: str0m's aws-lc-rs crypto, with one validated `dimpl`
//! configuration shared by every session instead of one built per session.
//!
//! str0m-aws-lc-rs 0.7 builds a `dimpl::Config` for every new DTLS instance, and building one
//! validates the crypto provider from scratch: key-exchange round trips on X25519, P-256 and
//! P-384, AEAD, PRF and signature test vectors. That cost more shard time per new transport
//! than the DTLS handshake itself: in a storm of 2000 joins, P-384 arithmetic that no
//! handshake used was the shard's largest cost. Nothing in the configuration depends on the
//! session (certificate, role and clock are given to each instance), so the shard builds it
//! once ([`SharedConfigDtls`]) and every session's `dimpl::Dtls` holds an `Arc` of it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The crypto provider of every shard session: str0m's aws-lc-rs provider, with
/// [`SharedConfigDtls`] for DTLS.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: SharedConfigDtls = SharedConfigDtls {
        config: OnceLock::new(),
    };
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &DTLS,
                ..str0m::crypto::from_feature_flags()
            })
        })
        .clone()
}

/// A [`DtlsProvider`] whose instances share one `dimpl::Config`: the one for the MTU str0m
/// asks for first (every shard session asks for the same); another MTU gets a configuration
/// of its own, built as str0m-aws-lc-rs would.
#[derive(Debug)]
pub(crate) struct SharedConfigDtls {
    config: OnceLock<(Option<usize>, Built)>,
}

/// A built configuration, or why it could not be built.
type Built = Result<Arc<dimpl::Config>, String>;

impl SharedConfigDtls {
    fn build(mtu: Option<usize>) -> Built {
        // As str0m-aws-lc-rs: ICE has verified the peer's address before DTLS starts, so a
        // server cookie exchange would only add a round trip.
        let mut builder = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::aws_lc_rs::default_provider())
            .use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        builder
            .build()
            .map(Arc::new)
            .map_err(|e| format!("dimpl config creation failed: {e}"))
    }

    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let (cached_mtu, config) = self.config.get_or_init(|| (mtu, Self::build(mtu)));
        let config = if *cached_mtu == mtu {
            config.clone()
        } else {
            Self::build(mtu)
        };
        config.map_err(CryptoError::Other)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {other}"
                )))
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// One session's DTLS: `dimpl::Dtls` behind str0m's instance trait.
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_one_validated_configuration() {
        let provider = crypto_provider();
        let cert = provider.dtls_provider.generate_certificate().expect("cert");
        let now = Instant::now();
        let dtls = SharedConfigDtls {
            config: OnceLock::new(),
        };
        let a = dtls.config(Some(1150)).expect("config");
        let b = dtls.config(Some(1150)).expect("config");
        assert!(
            Arc::ptr_eq(&a, &b),
            "one configuration for the MTU of every session"
        );
        let c = dtls.config(None).expect("config");
        assert!(!Arc::ptr_eq(&a, &c), "another MTU, another configuration");
        for version in [DtlsVersion::Dtls12, DtlsVersion::Dtls13, DtlsVersion::Auto] {
            let mut instance = dtls
                .new_dtls(&cert, now, version, Some(1150))
                .expect("instance");
            instance.set_active(false);
            assert!(!instance.is_active());
        }
        assert!(dtls.new_dtls(&cert, now, DtlsVersion::Auto, None).is_ok());
    }
}
