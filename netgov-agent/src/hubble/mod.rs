//! The Hubble API: netgov's judged flows served as Hubble flows, so that
//! Hubble's CLI, Relay and UI, and the tools that read Hubble's JSON, show
//! netgov's verdicts on any CNI.
//!
//! - [`convert`]: a judged flow as a Hubble `Flow` (verdicts, endpoints,
//!   the deciding policies: [`endpoint`], [`policies`]);
//! - [`ring`]: the last N events (`--hubble-event-buffer-capacity`);
//! - [`filter`]: Hubble's `FlowFilter`, one filter per file;
//! - [`observer`] and [`peer`]: the gRPC services Relay and the CLI call;
//! - [`export`]: the JSON export file;
//! - [`serve`]: the server, with gRPC health, reflection and optional
//!   mutual TLS.
//!
//! The judge stage pushes an event when a flow is first judged and each
//! time its verdict or enforcement changes; nothing here waits on a
//! client.

pub mod convert;
pub mod endpoint;
pub mod export;
pub mod filter;
pub mod observer;
pub mod peer;
pub mod policies;
pub mod proto;
pub mod ring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use self::observer::{ObserverService, ServedNode};
use self::peer::{PeerDiscovery, PeerService, tls_server_name};
use self::proto::observer::observer_server::ObserverServer;
use self::proto::peer::peer_server::PeerServer;
use self::ring::EventRing;
use crate::state::ClusterState;

/// The service name `hubble status` asks the gRPC health service about.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Cilium's Hubble port.
pub const DEFAULT_PORT: u16 = 4244;

/// The files of the server's (mutual) TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted (PEM); none: clients
    /// are not asked for a certificate.
    pub client_cas: Vec<PathBuf>,
}

/// What `netgov agent --hubble-*` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubbleOptions {
    /// Where the gRPC server listens; no server when `None` (the export
    /// file alone).
    pub listen: Option<SocketAddr>,
    /// TLS, when given.
    pub tls: Option<TlsFiles>,
    /// Events the ring keeps.
    pub capacity: usize,
    /// The export file, when given.
    pub export: Option<export::ExportOptions>,
    /// The agent's own pod (`namespace`, `name`), to find its peers.
    pub pod: Option<(String, String)>,
}

/// Why the Hubble server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HubbleError {
    /// The address cannot be bound.
    #[error("Hubble server: cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file cannot be read.
    #[error("Hubble server: {flag} {path}")]
    TlsFile {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files do not make a configuration (a key that does not
    /// match, a file that is not PEM).
    #[error("Hubble server: TLS configuration (--hubble-tls-*)")]
    Tls(#[source] tonic::transport::Error),
    /// The reflection service cannot read the descriptors (a build fault).
    #[error("Hubble server: reflection descriptors")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The export file cannot be opened.
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

/// Who this server is.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// This node's name.
    pub node: String,
    /// The agent's own pod (`namespace`, `name`), to find its peers.
    pub pod: Option<(String, String)>,
}

/// A started server: where it listens and its task.
pub struct RunningServer {
    /// The bound address (the port chosen, for port 0).
    pub address: SocketAddr,
    /// The server; ends with an error only if serving fails.
    pub task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, HubbleError> {
    std::fs::read(path).map_err(|source| HubbleError::TlsFile {
        flag,
        path: path.clone(),
        source,
    })
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, HubbleError> {
    let identity = Identity::from_pem(
        read("--hubble-tls-cert-file", &files.cert)?,
        read("--hubble-tls-key-file", &files.key)?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if !files.client_cas.is_empty() {
        let mut bundle = Vec::new();
        for path in &files.client_cas {
            bundle.extend(read("--hubble-tls-client-ca-files", path)?);
            bundle.push(b'\n');
        }
        config = config.client_ca_root(Certificate::from_pem(bundle));
    }
    Ok(config)
}

/// Binds and starts the Hubble server over `ring` until `shutdown`
/// completes: Observer, Peer, gRPC health (`SERVING` for
/// [`HEALTH_SERVICE`]) and server reflection (v1 and v1alpha, for
/// grpcurl).
///
/// # Errors
/// [`HubbleError`] when the address cannot be bound or TLS does not load.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    identity: ServerIdentity,
    ring: Arc<EventRing>,
    state: Arc<RwLock<ClusterState>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, HubbleError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HubbleError::Listen {
            addr: listen,
            source,
        })?;
    let address = listener.local_addr().unwrap_or(listen);
    let tls_files = tls;
    let tls = tls_files.is_some();
    let mut builder = Server::builder();
    if let Some(files) = tls_files {
        builder = builder
            .tls_config(tls_config(files)?)
            .map_err(HubbleError::Tls)?;
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_alpha = reflection()
        .build_v1alpha()
        .map_err(HubbleError::Reflection)?;
    let reflection = reflection().build_v1().map_err(HubbleError::Reflection)?;
    let observer = ObserverService::new(
        Arc::clone(&ring),
        ServedNode {
            name: identity.node.clone(),
            address,
            tls_server_name: tls.then(|| tls_server_name(&identity.node)),
        },
        Arc::clone(&state),
    );
    let peer = PeerService::new(
        PeerDiscovery {
            node: identity.node,
            listen: address,
            pod: identity.pod,
            tls,
        },
        state,
    );
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(ObserverServer::new(observer))
        .add_service(PeerServer::new(peer));
    let task = tokio::spawn(
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown),
    );
    Ok(RunningServer { address, task })
}

/// This machine's host name (for events when `NODE_NAME` is not set).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
