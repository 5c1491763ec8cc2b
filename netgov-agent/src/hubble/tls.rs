//! The Hubble server's (mutual) TLS, reloaded when its files change.
//!
//! cert-manager renews the certificates before they expire and the kubelet
//! swaps the mounted files; Relay keeps connecting. So every new connection
//! looks at the files' modification times (three `stat`s, against a
//! handshake's cost) and, when one changed, reads them again: the
//! certificate, the key and the client CAs. A set that does not load (a
//! half-written renewal) keeps the previous one in force, is logged once,
//! and is tried again when the files change again. Connections already open keep the
//! certificate they were made with.
//!
//! gRPC over TLS needs ALPN `h2`; the handshake has a deadline, so a
//! client that never finishes one holds nothing for long.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::TlsFiles;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that does not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM of the expected kind.
    #[error("{flag} {path}: {source}")]
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The crypto provider offers none of the protocol versions asked for
    /// (a build fault).
    #[error("TLS protocol versions")]
    ProtocolVersions(#[source] rustls::Error),
    /// A client CA is not a CA certificate rustls accepts.
    #[error("--hubble-tls-client-ca-files {path}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The client CAs make no verifier.
    #[error("--hubble-tls-client-ca-files")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The key does not go with the certificate (or either is unusable).
    #[error("--hubble-tls-cert-file and --hubble-tls-key-file do not make a certificate")]
    CertificateKey(#[source] rustls::Error),
}

fn file_error(flag: &'static str, path: &Path, source: impl Into<io::Error>) -> TlsError {
    TlsError::File {
        flag,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// A PEM error as the I/O error it is, or invalid data (the PEM error
/// kept as the source).
fn pem_error(error: rustls::pki_types::pem::Error) -> io::Error {
    match error {
        rustls::pki_types::pem::Error::Io(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, pem_error(e)))?;
    if certificates.is_empty() {
        return Err(file_error(
            flag,
            path,
            io::Error::new(io::ErrorKind::InvalidData, "no PEM certificate"),
        ));
    }
    Ok(certificates)
}

/// Reads the files into a server configuration.
///
/// # Errors
/// [`TlsError`] naming the flag and the file, or what does not fit.
pub fn load(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("--hubble-tls-cert-file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("--hubble-tls-key-file", &files.key, pem_error(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ProtocolVersions)?;
    let builder = if files.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &files.client_cas {
            for ca in certificates("--hubble-tls-client-ca-files", path)? {
                roots.add(ca).map_err(|source| TlsError::ClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(TlsError::ClientVerifier)?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::CertificateKey)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The modification times of the files (`None` for one that cannot be
/// read now).
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    std::iter::once(&files.cert)
        .chain([&files.key])
        .chain(&files.client_cas)
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// The configuration in force, the file times it was read at, and those
/// of files that did not load (not tried again until they change).
struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    failed: Option<Vec<Option<SystemTime>>>,
}

/// A TLS acceptor whose configuration follows its files.
pub struct ReloadingTls {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl ReloadingTls {
    /// Loads the files once.
    ///
    /// # Errors
    /// [`TlsError`] when they do not load: at start, that stops the agent.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = Arc::new(load(&files)?);
        Ok(Self {
            files,
            loaded: Mutex::new(Loaded {
                config,
                stamps,
                failed: None,
            }),
        })
    }

    /// The configuration for a new connection: read again if a file
    /// changed, else (or if the new files do not load) the one in force.
    pub fn current(&self) -> Arc<ServerConfig> {
        let now = stamps(&self.files);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now != loaded.stamps && loaded.failed.as_ref() != Some(&now) {
            match load(&self.files) {
                Ok(config) => {
                    tracing::info!("Hubble server: TLS files changed, read again");
                    loaded.config = Arc::new(config);
                    loaded.stamps = now;
                    loaded.failed = None;
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error),
                        "Hubble server: changed TLS files do not load; the previous ones stay in force");
                    loaded.failed = Some(now);
                }
            }
        }
        Arc::clone(&loaded.config)
    }

    /// Completes a client's handshake with the configuration in force.
    ///
    /// # Errors
    /// The handshake's error, or a timeout past [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.current());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}
