//! TLS for the listener (`[server.tls]`): the certificate and key are PEM files, checked as a
//! pair at start-up (a bad pair is fatal) and reloaded while the node runs, when either
//! file changes or on SIGHUP. A reload changes what the next handshake is given; connections
//! already open keep the session they negotiated. A reload that fails (a half-written file,
//! a key that does not match) keeps the pair in use and says so in the log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A certificate pair that cannot be used; the message names the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificate the next handshake gets; replaced on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("tls lock poisoned").clone())
    }
}

/// The listener's TLS: an acceptor for the door and the pair it reloads.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: Arc<(PathBuf, PathBuf)>,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    /// Loads and checks the pair. Every error names the file it is about.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_pair(cert_file, key_file, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The door speaks HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: Arc::new((cert_file.to_owned(), key_file.to_owned())),
            provider,
        })
    }

    /// The acceptor the door runs each new connection's handshake with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files again; on success the next handshake gets the new pair.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = &*self.files;
        let pair = load_pair(cert, key, &self.provider)?;
        *self.current.0.write().expect("tls lock poisoned") = Arc::new(pair);
        Ok(())
    }

    /// Reloads when either file changes (checked every second) and on SIGHUP, until `stop`.
    pub fn spawn_reloader(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let tls = self.clone();
        tracker.spawn(async move {
            let mut seen = tls.stamp();
            let mut hup = hangups();
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => "files changed",
                    Some(()) = next_hangup(&mut hup) => "SIGHUP",
                };
                let now = tls.stamp();
                if why == "files changed" && now == seen {
                    continue;
                }
                seen = now;
                match tls.reload() {
                    Ok(()) => tracing::info!(reason = why, "TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        reason = why,
                        error = %e,
                        "TLS certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        });
    }

    /// What changes when a file is replaced or rewritten: modification time and length.
    fn stamp(&self) -> [Option<(SystemTime, u64)>; 2] {
        let of = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        [of(&self.files.0), of(&self.files.1)]
    }
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let named = |path: &Path, what: &str, e: &dyn std::fmt::Display| {
        TlsError(format!("TLS {what} {}: {e}", path.display()))
    };
    let read =
        |path: &Path, what: &str| std::fs::read(path).map_err(|e: io::Error| named(path, what, &e));
    let cert_pem = read(cert_file, "certificate file")?;
    let key_pem = read(key_file, "key file")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cert_file, "certificate file", &e))?;
    if chain.is_empty() {
        return Err(named(
            cert_file,
            "certificate file",
            &"no PEM certificate in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        named(
            key_file,
            "key file",
            &format!("no PEM private key in it ({e})"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError(format!(
            "TLS key file {} does not fit certificate file {}: {e}",
            key_file.display(),
            cert_file.display()
        ))
    })
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(h: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = h {
        return s.recv().await;
    }
    let _ = h;
    std::future::pending().await
}
