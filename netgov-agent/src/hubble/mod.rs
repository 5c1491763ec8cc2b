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
//! - [`listener`] and [`tls`]: accepting clients, plain or mutual TLS;
//! - [`serve`]: the server, with gRPC health and reflection.
//!
//! The judge stage pushes an event when a flow is first judged and each
//! time its verdict or enforcement changes; nothing here waits on a
//! client. This module knows nothing of the agent: what it loses or
//! refuses it reports as a [`Trouble`], which the agent counts.

pub mod convert;
pub mod endpoint;
pub mod export;
pub mod filter;
pub mod listener;
pub mod observer;
pub mod peer;
pub mod policies;
pub mod proto;
pub mod ring;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use self::observer::{MAX_STREAMS, ObserverService, ServedNode, StreamLimits};
use self::peer::{PeerDiscovery, PeerService, PodRef, tls_server_name};
use self::proto::observer::observer_server::ObserverServer;
use self::proto::peer::peer_server::PeerServer;
use self::ring::EventRing;
use crate::engine::ClusterState;
use crate::model::string_enum;

/// The service name `hubble status` asks the gRPC health service about.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Cilium's Hubble port.
pub const DEFAULT_PORT: u16 = 4244;

/// How often an idle HTTP/2 connection is pinged.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

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
    /// The agent's own pod, to find its peers.
    pub pod: Option<PodRef>,
}

/// Where the judge stage puts Hubble events, and the node they name.
#[derive(Clone)]
pub struct HubbleSink {
    /// The ring clients read (none without a server: the export file
    /// alone).
    pub ring: Option<Arc<EventRing>>,
    /// This node's name.
    pub node: String,
}

/// What the Hubble server loses or refuses, for the agent to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// Events overwritten in the ring before a client read them (it was
    /// told, with a `LostEvent`).
    ClientLost(u64),
    /// A client refused.
    Rejected(Rejection),
}

string_enum! {
    /// Why a client was refused (the `reason` of
    /// `netgov_hubble_rejected_total`).
    pub enum Rejection {
        /// [`listener::MAX_CONNECTIONS`] were open, or as many as one
        /// address may have.
        ConnectionLimit => "connection_limit",
        /// It sent nothing for [`listener::FIRST_BYTES_TIMEOUT`].
        Silent => "silent",
        /// Its TLS handshake failed or timed out (no or a wrong certificate).
        Handshake => "tls_handshake",
        /// [`MAX_STREAMS`] streams were open.
        StreamLimit => "stream_limit",
    }
}

/// Where troubles are reported.
pub type Report = Arc<dyn Fn(Trouble) + Send + Sync>;

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
    /// The TLS files do not load.
    #[error("Hubble server TLS")]
    Tls(#[from] tls::TlsError),
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
    /// The agent's own pod, to find its peers.
    pub pod: Option<PodRef>,
}

/// A started server: where it listens, its task, and how to stop it.
/// Dropped (an agent that fails to start after it), it stops.
pub struct RunningServer {
    /// The bound address (the port chosen, for port 0).
    pub address: SocketAddr,
    /// The server; ends with an error only if serving fails.
    pub task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Dropped to stop: every stream ends, then the server.
    pub stop: tokio_util::sync::DropGuard,
}

/// Binds `listen`; an address of every interface in both families (`[::]`)
/// falls back to IPv4's (`0.0.0.0`) on a node without IPv6.
async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, HubbleError> {
    let error = |source| HubbleError::Listen {
        addr: listen,
        source,
    };
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => Ok(listener),
        Err(_) if listen.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.port());
            tokio::net::TcpListener::bind(v4).await.map_err(error)
        }
        Err(source) => Err(error(source)),
    }
}

/// Binds and starts the Hubble server over `ring`: Observer, Peer, gRPC
/// health (`SERVING` for [`HEALTH_SERVICE`]) and server reflection (v1 and
/// v1alpha, for grpcurl). It runs until [`RunningServer::stop`] is
/// dropped, which also ends every open stream (a follower or Relay's
/// `Notify` would otherwise hold a graceful stop for ever).
///
/// # Errors
/// [`HubbleError`] when the address cannot be bound or TLS does not load.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    identity: ServerIdentity,
    (ring, state): (Arc<EventRing>, Arc<RwLock<ClusterState>>),
    report: Report,
) -> Result<RunningServer, HubbleError> {
    // TLS files that do not load stop the agent before it listens.
    let reloading = tls
        .map(|files| tls::ReloadingTls::new(files.clone()).map(Arc::new))
        .transpose()?;
    let listener = bind(listen).await?;
    let address = listener.local_addr().unwrap_or(listen);
    let serves_tls = reloading.is_some();
    let stop = CancellationToken::new();
    let limits = StreamLimits {
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        stopping: stop.clone(),
        report: Arc::clone(&report),
    };
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
            tls_server_name: serves_tls.then(|| tls_server_name(&identity.node)),
            started: Instant::now(),
        },
        Arc::clone(&state),
        limits.clone(),
    );
    let peer = PeerService::new(
        PeerDiscovery {
            node: identity.node,
            listen: address,
            pod: identity.pod,
            tls: serves_tls,
        },
        state,
        limits,
    );
    // A client that stops answering is dropped; one connection cannot
    // open streams without bound.
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(ObserverServer::new(observer))
        .add_service(PeerServer::new(peer));
    let (ready, connections) = tokio::sync::mpsc::channel(16);
    tokio::spawn(listener::accept(
        listener,
        reloading,
        ready,
        report,
        stop.clone(),
    ));
    let stopped = stop.clone();
    let task = tokio::spawn(
        router.serve_with_incoming_shutdown(ReceiverStream::new(connections), async move {
            stopped.cancelled().await
        }),
    );
    Ok(RunningServer {
        address,
        task,
        stop: stop.drop_guard(),
    })
}

/// This machine's host name (for events when `NODE_NAME` is not set).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
