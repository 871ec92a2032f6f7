//! TLS with rustls (the `ring` provider; no OpenSSL): the client listener's certificate,
//! reloaded when its files change, and the roots pkv trusts for a `rediss://` upstream.
//!
//! The listener's certificate is held by a [`CertStore`], rustls's certificate resolver for
//! every handshake. [`CertStore::watch`] re-reads the files when their modification time or
//! size changes, and [`CertStore::reload`] does the same on demand (SIGHUP). A new pair is
//! used by the handshakes that follow; connections already open keep the session they
//! negotiated. A pair that does not load (bad PEM, a key that is not the certificate's)
//! keeps the one in use, with one line in the log.
//!
//! A `rediss://` upstream is verified against `PKV_UPSTREAM_TLS_CA` when it is set, else
//! against the system's roots (where operators add their own CA): the same roots for pkv's
//! own connections ([`upstream_connector`]) and for those the `redis` crate still makes
//! ([`redis_client`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How often the certificate files are looked at for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Makes `ring` the process's rustls provider. The `redis` crate builds its TLS settings
/// from the process default; installing it twice is harmless.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS client listener's settings (`PKV_TLS_*`).
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a CA, clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// What identifies one version of the certificate files: a change to either is a reload.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let (c, k) = (one(cert)?, one(key)?);
    Some((c.0, c.1, k.0, k.1))
}

/// The listener's certificate and key, swapped whole when the files change.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when last read, loaded or not: a bad pair is reported once.
    seen: RwLock<Stamp>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair; an error names the file at fault.
    pub fn open(cert: &Path, key: &Path) -> Result<CertStore, String> {
        let seen = stamp(cert, key);
        let pair = load_pair(cert, key)?;
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
            seen: RwLock::new(seen),
        })
    }

    /// Reads the files again and uses them for new handshakes. On failure the pair in use
    /// stays, and the error is returned (and logged).
    pub fn reload(&self) -> Result<(), String> {
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = stamp(&self.cert, &self.key);
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!("TLS certificate not reloaded, the previous one stays in use: {e}");
                Err(e)
            }
        }
    }

    /// Reloads whenever the files change (looked at every [`RELOAD_POLL`]) and on SIGHUP,
    /// for as long as it runs.
    pub async fn watch(self: Arc<Self>) {
        let mut every = tokio::time::interval(RELOAD_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = every.tick() => {}
                Some(()) = hangup => {
                    let _ = self.reload();
                    continue;
                }
            }
            let now = stamp(&self.cert, &self.key);
            let changed =
                now.is_some() && now != *self.seen.read().unwrap_or_else(|p| p.into_inner());
            if changed {
                let _ = self.reload();
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("PKV_TLS_CERT: cannot read {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "PKV_TLS_CERT: no certificate in {}",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("PKV_TLS_KEY: cannot read {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        format!(
            "PKV_TLS_KEY: {} does not go with the certificate in {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

fn load_roots(path: &Path, setting: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{setting}: {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{setting}: no certificate in {}", path.display()));
    }
    Ok(roots)
}

/// The acceptor for the TLS listener, and the store behind it (to reload).
pub fn acceptor(settings: &ListenerTls) -> Result<(TlsAcceptor, Arc<CertStore>), String> {
    let store = Arc::new(CertStore::open(&settings.cert, &settings.key)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let roots = load_roots(ca, "PKV_TLS_CLIENT_CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("PKV_TLS_CLIENT_CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(store.clone());
    Ok((TlsAcceptor::from(Arc::new(config)), store))
}

/// The roots a `rediss://` upstream is verified against.
fn upstream_roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    if let Some(ca) = ca {
        return load_roots(ca, "PKV_UPSTREAM_TLS_CA");
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "no system root certificates found (install ca-certificates, or set PKV_UPSTREAM_TLS_CA)"
                .into(),
        );
    }
    Ok(roots)
}

/// The connector for pkv's own connections to a `rediss://` upstream.
pub fn upstream_connector(ca: Option<&Path>) -> Result<TlsConnector, String> {
    let roots = upstream_roots(ca)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A `redis` crate client for `url`; a `rediss://` URL trusts `ca` when given (else the
/// system's roots, which the crate loads itself).
pub fn redis_client(url: &str, ca: Option<&Path>) -> redis::RedisResult<redis::Client> {
    let client = redis::Client::open(url)?;
    let tls = matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    );
    match ca {
        Some(ca) if tls => {
            let pem = std::fs::read(ca)?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        _ => Ok(client),
    }
}
