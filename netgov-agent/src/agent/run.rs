//! `netgov agent`: capture → enrich and judge → export, live.
//!
//! The capture loop hands ended flows and changed live flows to a bounded
//! channel without waiting (a full channel is counted as events lost at
//! stage `evaluate`); one task judges them against the cluster state and
//! exports metrics, the flow log and the recent flows served on `/flows`.
//!
//! A flow is counted once in `netgov_flows_total` when first judged, and
//! again only if its verdict changes — live flows are judged again whenever
//! the cluster state (policies, labels, identities) changes, even when no
//! packet moved. A
//! violation is counted once, when its enforcement is known (`gap` or
//! `enforced`) or when the flow ends (`unknown` then); unexpected egress
//! once per flow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::config::AgentConfig;
use super::judge::{Enforcement, Judgement, NodeContext, judge};
use crate::capture::record::{EndReason, FlowRecord, Protocol};
use crate::capture::{self, CaptureError, CaptureHealth, CaptureOptions, FlowSink};
use crate::cluster::file_source::FileSource;
use crate::cluster::{ClusterHealth, kube_source};
use crate::export::metrics::{FlowLabels, Metrics, ResourceLabels, StageLabels, ViolationLabels};
use crate::policy::ClusterState;
use crate::policy::Decision;

/// How many judged flows `/flows` keeps.
const RECENT_FLOWS: usize = 1000;
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
    /// Flow log: a file, `-` for standard output, or none.
    pub flow_log: Option<PathBuf>,
    /// Serve `/flows` to non-loopback clients too. Off by default: with
    /// host networking the listener is on the node's address, and flow
    /// metadata is not for everyone who reaches the node.
    pub flows_from_anywhere: bool,
    /// This node.
    pub node: NodeContext,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The cluster-state files do not load.
    #[error("cluster state: {}", .0.join("; "))]
    ClusterFiles(Vec<String>),
    /// The Kubernetes client cannot be built.
    #[error(transparent)]
    Kube(#[from] kube_source::KubeSourceError),
    /// The capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The flow log cannot be opened.
    #[error("flow log {path}: {source}")]
    FlowLog {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A flow handed from the capture to the judge.
struct Update {
    record: FlowRecord,
}

/// Shared between the tasks.
struct Shared {
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    metrics: Metrics,
    /// The latest judged flows, serialised only when `/flows` asks (most
    /// are never asked for).
    recent: Mutex<VecDeque<(FlowRecord, Judgement)>>,
    attached: AtomicBool,
    flows_from_anywhere: bool,
}

impl Shared {
    fn ready(&self) -> Result<(), String> {
        if !self.attached.load(Ordering::Relaxed) {
            return Err("programs not attached yet".into());
        }
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        if !health.ready() {
            return Err("cluster state not synced".into());
        }
        Ok(())
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
            let source = FileSource::open(paths.clone()).map_err(|errors| {
                AgentError::ClusterFiles(errors.iter().map(ToString::to_string).collect())
            })?;
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
    let shared = Arc::new(Shared {
        state,
        health,
        metrics: Metrics::new(options.config.max_workloads),
        recent: Mutex::new(VecDeque::new()),
        attached: AtomicBool::new(false),
        flows_from_anywhere: options.flows_from_anywhere,
    });
    let listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.metrics_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(options.metrics_addr);
    tokio::spawn(serve_http(listener, Arc::clone(&shared)));
    tokio::spawn(posture(Arc::clone(&shared)));

    let flow_log: Option<Box<dyn Write + Send>> = match &options.flow_log {
        None => None,
        Some(path) if path.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(path) => Some(Box::new(std::fs::File::create(path).map_err(|source| {
            AgentError::FlowLog {
                path: path.clone(),
                source,
            }
        })?)),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let judge_task = tokio::spawn(judge_flows(
        rx,
        Arc::clone(&shared),
        options.config.clone(),
        options.node.clone(),
        flow_log,
    ));
    let mut sink = AgentSink {
        tx,
        shared: Arc::clone(&shared),
        previous: CaptureHealth::default(),
    };
    let attached = Arc::clone(&shared);
    let result = capture::run(options.capture.clone(), &mut sink, move |_| {
        attached.attached.store(true, Ordering::Relaxed);
        ready(bound);
    })
    .await;
    drop(sink);
    let _ = judge_task.await;
    result.map(drop).map_err(AgentError::from)
}

struct AgentSink {
    tx: mpsc::Sender<Update>,
    shared: Arc<Shared>,
    previous: CaptureHealth,
}

impl AgentSink {
    fn send(&self, record: FlowRecord) {
        if self.tx.try_send(Update { record }).is_err() {
            self.shared
                .metrics
                .events_lost
                .get_or_create(&StageLabels {
                    stage: "evaluate".into(),
                })
                .inc();
        }
    }
}

impl FlowSink for AgentSink {
    fn ended(&mut self, records: Vec<FlowRecord>) -> Result<(), CaptureError> {
        records.into_iter().for_each(|r| self.send(r));
        Ok(())
    }

    fn live(&mut self, records: Vec<FlowRecord>) {
        records.into_iter().for_each(|r| self.send(r));
    }

    fn health(&mut self, health: &CaptureHealth) {
        let metrics = &self.shared.metrics;
        metrics
            .attached_interfaces
            .set(health.attached_interfaces as i64);
        metrics
            .flow_table_entries
            .set(health.flow_table_entries as i64);
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        metrics.flow_table_evictions.inc_by(delta(
            health.table_losses.kernel_evictions,
            self.previous.table_losses.kernel_evictions,
        ));
        for (stage, counter) in [
            ("kernel_ringbuf", "ringbuf_drops"),
            ("kernel_flow_map", "flow_map_update_failures"),
            ("kernel_fragments", "fragments_unmatched"),
            ("kernel_parse", "parse_errors"),
        ] {
            let now = health.kernel.get(counter).copied().unwrap_or(0);
            let before = self.previous.kernel.get(counter).copied().unwrap_or(0);
            metrics
                .events_lost
                .get_or_create(&StageLabels {
                    stage: stage.into(),
                })
                .inc_by(delta(now, before));
        }
        self.previous = health.clone();
    }
}

/// What was counted for a flow, and its latest record (to judge it again
/// when the cluster changes).
struct Tracked {
    record: FlowRecord,
    verdict: Decision,
    enforcement: Option<Enforcement>,
    violation_counted: bool,
    egress_counted: bool,
}

/// A live flow's identity: its endpoints in canonical order and its
/// protocol. Neither the orientation nor the first packet's time may be
/// part of it: both can change while a flow lives (a view observed earlier
/// is merged later), and the flow would be counted twice. A flow that
/// ends leaves the tracked set, so a later flow on the same endpoints is
/// new.
type FlowId = ((IpAddr, u16), (IpAddr, u16), Protocol);

fn flow_id(record: &FlowRecord) -> FlowId {
    let (a, b) = ((record.src, record.src_port), (record.dst, record.dst_port));
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    (low, high, record.protocol)
}

fn unix_now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The judge stage's state.
struct Judge {
    shared: Arc<Shared>,
    config: AgentConfig,
    node: NodeContext,
    flow_log: Option<Box<dyn Write + Send>>,
    tracked: HashMap<FlowId, Tracked>,
    /// Cluster generation at the last re-judgement of live flows.
    generation: u64,
    /// Workloads with pods at the last look, to drop the series of those
    /// that are gone.
    workloads: std::collections::HashSet<(String, String)>,
}

async fn judge_flows(
    mut rx: mpsc::Receiver<Update>,
    shared: Arc<Shared>,
    config: AgentConfig,
    node: NodeContext,
    flow_log: Option<Box<dyn Write + Send>>,
) {
    let mut judge = Judge {
        shared,
        config,
        node,
        flow_log,
        tracked: HashMap::new(),
        generation: 0,
        workloads: Default::default(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            update = rx.recv() => match update {
                Some(Update { record }) => judge.process(record),
                None => break,
            },
            _ = tick.tick() => judge.on_cluster_change(),
        }
    }
}

impl Judge {
    /// When policies, labels or identities changed: judges every live flow
    /// again, and drops the metric series of workloads that are gone.
    fn on_cluster_change(&mut self) {
        let workloads: std::collections::HashSet<(String, String)> = {
            let state = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
            if state.generation() == self.generation {
                return;
            }
            self.generation = state.generation();
            state
                .pods()
                .map(|p| (p.namespace.to_string(), p.workload.name.clone()))
                .collect()
        };
        let live: Vec<FlowRecord> = self.tracked.values().map(|t| t.record.clone()).collect();
        for record in live {
            self.process(record);
        }
        if !self.workloads.is_empty() {
            for (namespace, workload) in self.workloads.difference(&workloads) {
                self.shared.metrics.forget_workload(namespace, workload);
            }
        }
        self.workloads = workloads;
    }

    fn process(&mut self, record: FlowRecord) {
        let ended = record.end_reason != EndReason::Active;
        let id = flow_id(&record);
        let age = Duration::from_nanos((unix_now_nanos() - record.first_seen).max(0) as u64);
        let judgement = {
            let state = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
            judge(&record, &state, &self.config, &self.node, age)
        };
        let Some(judgement) = judgement else {
            return;
        };
        let metrics = &self.shared.metrics;
        let previous = self.tracked.get(&id);
        let first = previous.is_none();
        let verdict_changed = previous.is_some_and(|p| p.verdict != judgement.verdict.verdict);
        let enforcement_changed = previous.is_some_and(|p| p.enforcement != judgement.enforcement);
        // A verdict that changes makes the flow a (new) violation or not.
        let mut violation_counted =
            previous.is_some_and(|p| p.violation_counted) && !verdict_changed;
        let mut egress_counted = previous.is_some_and(|p| p.egress_counted);
        if first || verdict_changed {
            metrics.count_flow(flow_labels(&record, &judgement));
        }
        if let (Some(denied_by), Some(enforcement)) = (judgement.denied_by, judgement.enforcement)
            && !violation_counted
            && (enforcement != Enforcement::Unknown || ended)
        {
            metrics.count_violation(ViolationLabels {
                src_namespace: judgement.src.namespace.clone(),
                src_workload: judgement.src.workload.clone(),
                dst_namespace: judgement.dst.namespace.clone(),
                dst_workload: judgement.dst.workload.clone(),
                protocol: record.protocol.name().into_owned(),
                dst_port: port_label(&record),
                denied_by: label(&denied_by),
                enforcement: label(&enforcement),
            });
            violation_counted = true;
        }
        if judgement.unexpected_egress && !egress_counted {
            metrics.count_unexpected_egress(
                &judgement.src.namespace,
                &judgement.src.workload,
                record.dst,
            );
            egress_counted = true;
        }
        let logged = first || verdict_changed || enforcement_changed || ended;
        if logged && let Some(log) = self.flow_log.as_mut() {
            let _ = writeln!(log, "{}", log_entry(&record, &judgement));
            let _ = log.flush();
        }
        // The record goes to the tracked flow (to judge it again when the
        // cluster changes) and, when logged, to the recent flows: copied
        // only when both keep it.
        let recent_record = if ended {
            self.tracked.remove(&id);
            Some(record)
        } else {
            let (kept, recent_record) = if logged {
                (record.clone(), Some(record))
            } else {
                (record, None)
            };
            self.tracked.insert(
                id,
                Tracked {
                    record: kept,
                    verdict: judgement.verdict.verdict,
                    enforcement: judgement.enforcement,
                    violation_counted,
                    egress_counted,
                },
            );
            recent_record
        };
        if let Some(record) = recent_record {
            let mut recent = self.shared.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT_FLOWS {
                recent.pop_front();
            }
            recent.push_back((record, judgement));
        }
    }
}

fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn port_label(record: &FlowRecord) -> String {
    match record.protocol {
        crate::capture::record::Protocol::Icmp | crate::capture::record::Protocol::Icmpv6 => {
            String::new()
        }
        _ => record.dst_port.to_string(),
    }
}

fn flow_labels(record: &FlowRecord, judgement: &Judgement) -> FlowLabels {
    FlowLabels {
        src_namespace: judgement.src.namespace.clone(),
        src_workload: judgement.src.workload.clone(),
        dst_namespace: judgement.dst.namespace.clone(),
        dst_workload: judgement.dst.workload.clone(),
        protocol: record.protocol.name().into_owned(),
        verdict: label(&judgement.verdict.verdict),
    }
}

/// A flow-log line: the capture record, both identities, the verdict with
/// its explanation, enforcement and the unexpected-egress flag.
fn log_entry(record: &FlowRecord, judgement: &Judgement) -> Value {
    let mut entry = match serde_json::to_value(record) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    entry.insert("src_identity".into(), json!(judgement.src));
    entry.insert("dst_identity".into(), json!(judgement.dst));
    entry.insert("verdict".into(), json!(judgement.verdict.verdict));
    entry.insert("egress".into(), json!(judgement.verdict.egress));
    entry.insert("ingress".into(), json!(judgement.verdict.ingress));
    if let Some(denied_by) = judgement.denied_by {
        entry.insert("denied_by".into(), json!(denied_by));
    }
    if let Some(enforcement) = judgement.enforcement {
        entry.insert("enforcement".into(), json!(enforcement));
    }
    entry.insert(
        "unexpected_egress".into(),
        json!(judgement.unexpected_egress),
    );
    Value::Object(entry)
}

/// The namespace label that opts a namespace in to posture alerts
/// (`netgov_namespace_governed`); its value must be `"true"`.
pub const GOVERNED_LABEL: &str = "netgov.io/governed";

/// Every 5 s (and on every scrape): the state-derived metrics.
async fn posture(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        refresh_state_metrics(&shared);
    }
}

/// Pods no policy isolates, per namespace and direction; the cluster
/// state's health; policies that failed to compile.
fn refresh_state_metrics(shared: &Shared) {
    {
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        {
            let state = shared.state.read().unwrap_or_else(|e| e.into_inner());
            for pod in state.pods().filter(|p| !p.host_network) {
                let (ingress, egress) = ClusterState::isolation(pod);
                for (direction, isolated) in [("ingress", ingress), ("egress", egress)] {
                    let count = counts
                        .entry((pod.namespace.to_string(), direction.to_owned()))
                        .or_default();
                    if !isolated {
                        *count += 1;
                    }
                }
            }
            shared
                .metrics
                .policy_compile_errors
                .set(state.policy_errors().len() as i64);
            shared.metrics.set_governed_namespaces(
                state
                    .namespaces()
                    .filter(|(_, labels)| {
                        labels.get(GOVERNED_LABEL).map(String::as_str) == Some("true")
                    })
                    .map(|(name, _)| name),
            );
        }
        shared.metrics.set_unprotected_pods(&counts);
        shared.metrics.ready.set(i64::from(shared.ready().is_ok()));
        let health = shared
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (kind, resource) in &health.resources {
            let labels = ResourceLabels {
                resource: kind.name().into(),
            };
            shared
                .metrics
                .cluster_synced
                .get_or_create(&labels)
                .set(i64::from(resource.synced));
            shared
                .metrics
                .set_cluster_errors(kind.name(), resource.errors);
            if let Some(last) = resource.last_event {
                shared
                    .metrics
                    .cluster_age_seconds
                    .get_or_create(&labels)
                    .set(last.elapsed().as_secs() as i64);
            }
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(respond(&shared, &request, peer)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(shared: &Shared, request: &Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match request.uri().path() {
        "/metrics" => {
            refresh_state_metrics(shared);
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match shared.ready() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/flows" if !shared.flows_from_anywhere && !peer.ip().to_canonical().is_loopback() => {
            reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                "/flows answers loopback clients only (use kubectl port-forward, or start the agent with --flows-from-anywhere)\n".into(),
            )
        }
        "/flows" => {
            let filters: Vec<(String, String)> = request
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
            let matches = |entry: &Value| {
                filters.iter().all(|(key, wanted)| match key.as_str() {
                    "namespace" => [&entry["src_identity"], &entry["dst_identity"]]
                        .iter()
                        .any(|side| side["namespace"] == wanted.as_str()),
                    "pod" => [&entry["src_identity"], &entry["dst_identity"]]
                        .iter()
                        .any(|side| side["pod"] == wanted.as_str()),
                    "verdict" => entry["verdict"] == wanted.as_str(),
                    "enforcement" => entry["enforcement"] == wanted.as_str(),
                    _ => true,
                })
            };
            let flows: Vec<Value> = recent
                .iter()
                .map(|(record, judgement)| log_entry(record, judgement))
                .filter(|e| matches(e))
                .collect();
            reply(StatusCode::OK, "application/json", json!(flows).to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
