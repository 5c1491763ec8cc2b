//! `netgov agent`: wires capture → judge → exports, live, and runs until
//! SIGINT or SIGTERM (or the capture's `--duration`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::pipeline::Pipeline;
use super::shared::Shared;
use super::sink::AgentSink;
use super::staged::Staged;
use super::{http, listener, posture};
use crate::capture::{self, CaptureError, CaptureOptions};
use crate::config::AgentConfig;
use crate::engine::{ClusterState, DEFAULT_HISTORY_RETENTION};
use crate::export::metrics::Metrics;
use crate::flowlog::{FlowLog, FlowLogError, FlowLogTarget};
use crate::hubble::export::ExportFile;
use crate::hubble::ring::EventRing;
use crate::hubble::{
    HubbleError, HubbleOptions, HubbleSink, Report, RunningServer, ServerIdentity, Trouble,
};
use crate::judge::NodeContext;
use crate::sources::file_source::{FileSource, FileSourceError};
use crate::sources::{ClusterHealth, kube_source};

/// Capacity of the capture → judge channel.
const CHANNEL_CAPACITY: usize = 131_072;

/// Where the cluster state comes from.
#[derive(Clone, Debug)]
pub enum ClusterSource {
    /// Manifest files, reloaded when they change.
    Files(Vec<PathBuf>),
    /// The Kubernetes API (a kubeconfig, or inferred).
    Kubernetes(Option<PathBuf>),
}

/// What `netgov agent` was asked.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Capture settings.
    pub capture: CaptureOptions,
    /// Cluster state source.
    pub cluster: ClusterSource,
    /// Configuration.
    pub config: AgentConfig,
    /// Address of the HTTP endpoints.
    pub metrics_addr: SocketAddr,
    /// Flow log, if any.
    pub flow_log: Option<FlowLogTarget>,
    /// Serve `/flows` to non-loopback clients too. Off by default: with
    /// host networking the listener is on the node's address, and flow
    /// metadata is not for everyone who reaches the node.
    pub flows_from_anywhere: bool,
    /// This node.
    pub node: NodeContext,
    /// Staged policies to judge every flow against too (files or
    /// directories of manifests); none when empty.
    pub staged: Vec<std::path::PathBuf>,
    /// The Hubble API server and export, when asked for.
    pub hubble: Option<HubbleOptions>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The cluster-state files do not load.
    #[error("cluster state: {0}")]
    ClusterFiles(#[from] FileSourceError),
    /// The staged policies do not load.
    #[error("staged policies (--staged): {0}")]
    Staged(#[source] FileSourceError),
    /// The Kubernetes client cannot be built.
    #[error(transparent)]
    Kube(#[from] kube_source::KubeSourceError),
    /// The capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The flow log cannot be opened.
    #[error(transparent)]
    FlowLog(#[from] FlowLogError),
    /// The Hubble server or export file cannot start.
    #[error(transparent)]
    Hubble(#[from] HubbleError),
}

/// Waits until every resource of the cluster state has completed its
/// first list (logged while it takes long).
async fn wait_for_cluster_state(shared: &Shared) {
    let started = std::time::Instant::now();
    let mut said = false;
    while !shared
        .health
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .ready()
    {
        if !said && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!("waiting for the cluster state's first lists before capturing");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the agent until SIGINT or SIGTERM (or the capture's `--duration`).
/// `ready` is called once the programs are attached.
///
/// # Errors
/// [`AgentError`] when a source, the capture, the listener or the flow log
/// cannot start, or the capture fails.
pub async fn run(options: AgentOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), AgentError> {
    let (state, health) = match &options.cluster {
        ClusterSource::Files(paths) => {
            let source = FileSource::open(paths.clone())?;
            let handles = (source.state(), source.health());
            tokio::spawn(source.follow(Duration::from_secs(1)));
            handles
        }
        ClusterSource::Kubernetes(kubeconfig) => {
            let client = kube_source::client(kubeconfig.as_deref()).await?;
            let state = Arc::new(RwLock::new(ClusterState::new()));
            let health = Arc::new(RwLock::new(ClusterHealth::default()));
            kube_source::start(client, Arc::clone(&state), Arc::clone(&health));
            (state, health)
        }
    };
    {
        // A flow is judged for the last time at most one idle timeout and
        // one drain after its last packet; its pods must still be known
        // then, even if they were deleted and their IPs reused.
        let table = &options.capture.table;
        let longest_idle = table
            .idle_timeout
            .max(table.udp_idle_timeout)
            .max(table.icmp_idle_timeout)
            .max(table.close_grace);
        let retention = longest_idle + options.capture.drain_interval + Duration::from_secs(60);
        state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_history_retention(retention.max(DEFAULT_HISTORY_RETENTION));
    }
    let metrics = Metrics::with_caps(
        options.config.max_workloads,
        options.config.max_names_per_workload,
    );
    metrics.set_build_info(crate::VERSION, crate::REVISION);
    let mut shared = Shared::new(
        state,
        health,
        metrics,
        options.flows_from_anywhere,
        options.config.names,
    );
    // Hubble's events name this node; without NODE_NAME, its host name.
    let hubble = options.hubble.as_ref().map(|hubble| HubbleSink {
        // Only a server reads the ring.
        ring: hubble
            .listen
            .map(|_| Arc::new(EventRing::new(hubble.capacity))),
        node: options
            .node
            .node_name
            .clone()
            .unwrap_or_else(crate::hubble::host_name),
    });
    if let Some(sink) = &hubble {
        shared = shared.with_hubble(sink.clone());
    }
    let shared = Arc::new(shared);
    let hubble_server = match (&options.hubble, &hubble) {
        (Some(options), Some(sink)) => start_hubble(options, sink, &shared).await?,
        _ => None,
    };
    let flow_log = options.flow_log.clone().map(FlowLog::open).transpose()?;
    let listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.metrics_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(options.metrics_addr);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener::serve(
        listener,
        http::router(Arc::clone(&shared)),
        listener::Limits::default(),
        {
            let shared = Arc::clone(&shared);
            move || shared.metrics.count_http_rejected()
        },
        async {
            let _ = http_stopped.await;
        },
    ));
    tokio::spawn(posture::refresh_forever(Arc::clone(&shared)));
    tokio::spawn({
        let shared = Arc::clone(&shared);
        super::memory::trim_forever(move |bytes| shared.metrics.set_heap_in_use(bytes))
    });

    let staged = if options.staged.is_empty() {
        None
    } else {
        Some(Staged::open(options.staged.clone()).map_err(AgentError::Staged)?)
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let mut pipeline = Pipeline::new(
        Arc::clone(&shared),
        options.config.clone(),
        options.node.clone(),
        flow_log,
        options.capture.drain_interval,
        staged,
    );
    if let Some(export) = options.hubble.as_ref().and_then(|h| h.export.clone()) {
        let file = ExportFile::open(export).map_err(HubbleError::from)?;
        pipeline = pipeline.with_hubble_export(file);
    }
    let judge_task = tokio::spawn(pipeline.run(rx));
    // Which addresses are Services must be known before the first flow is
    // seen: a connection is matched with its translation only when it is
    // new.
    wait_for_cluster_state(&shared).await;
    let mut sink = AgentSink::new(tx, Arc::clone(&shared));
    let attached = Arc::clone(&shared);
    let result = capture::run(options.capture.clone(), &mut sink, move |info| {
        attached.set_attached(info.clone());
        ready(bound);
    })
    .await;
    drop(sink);
    let _ = judge_task.await;
    // Requests under way are answered before the agent exits.
    let _ = stop_http.send(());
    if let Some(server) = hubble_server {
        stop_hubble(server).await;
    }
    if let Ok(Err(error)) = server.await {
        tracing::warn!(%error, "HTTP server");
    }
    result.map(drop).map_err(AgentError::from)
}

/// How long a stopping Hubble server may take to close its connections.
const HUBBLE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts what the Hubble server loses or refuses.
fn hubble_report(shared: &Arc<Shared>) -> Report {
    let shared = Arc::clone(shared);
    Arc::new(move |trouble| {
        let metrics = &shared.metrics;
        match trouble {
            Trouble::ClientLost(events) => metrics.count_hubble_client_lost(events),
            Trouble::Rejected(reason) => metrics.count_hubble_rejected(reason),
        }
    })
}

/// Starts the Hubble server, when asked for.
async fn start_hubble(
    options: &HubbleOptions,
    sink: &HubbleSink,
    shared: &Arc<Shared>,
) -> Result<Option<RunningServer>, AgentError> {
    let report = hubble_report(shared);
    let (Some(listen), Some(ring)) = (options.listen, &sink.ring) else {
        return Ok(None);
    };
    let server = crate::hubble::serve(
        listen,
        options.tls.as_ref(),
        ServerIdentity {
            node: sink.node.clone(),
            pod: options.pod.clone(),
        },
        (Arc::clone(ring), Arc::clone(&shared.state)),
        report,
    )
    .await?;
    tracing::info!(address = %server.address, tls = options.tls.is_some(), "Hubble server listening");
    Ok(Some(server))
}

/// Stops the Hubble server: every stream ends, then the connections close
/// (or are aborted after [`HUBBLE_STOP_TIMEOUT`]).
async fn stop_hubble(server: RunningServer) {
    let RunningServer { mut task, stop, .. } = server;
    drop(stop);
    match tokio::time::timeout(HUBBLE_STOP_TIMEOUT, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "Hubble server"),
        Ok(Err(error)) => tracing::warn!(%error, "Hubble server task"),
        Err(_) => {
            task.abort();
            tracing::warn!("Hubble server: connections still open at exit, aborted");
        }
    }
}
