//! `observer.Observer`: the flows in the ring, live ones as they come, and
//! what this node is.
//!
//! `GetFlows` as Hubble answers it:
//! - `number` N: the last N matching flows (with `first`, the first N);
//!   none: every matching flow held, or with `follow` only new ones (from
//!   `since`, when given);
//! - `since` / `until` bound the flows' times; a follower stops past
//!   `until`;
//! - `whitelist` / `blacklist`: see [`super::filter`]; a field netgov
//!   cannot honour is `InvalidArgument`, naming it;
//! - `field_mask` is accepted and the whole flow sent: a mask only trims,
//!   and `hubble observe`'s default mask would hide the traffic direction
//!   and the deciding policies of policy verdicts;
//! - a reader slower than the judge for a whole ring gets a `LostEvent`
//!   with the count (also counted, see [`Trouble::ClientLost`]).
//!
//! What a client can hold: a stream keeps the sequence numbers of the
//! flows it still has to send (8 bytes each, at most a ring's worth), and
//! at most [`STREAM_BACKLOG`] events waiting for it, twice (read from the
//! ring, and queued for the connection); at most [`MAX_STREAMS`] streams
//! are open at once, `GetFlows` and `Notify` together (`ResourceExhausted`
//! past that). Every stream ends when the server stops.
//!
//! Agent and debug events: `Unimplemented` (netgov emits flows only).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{timestamp, unix_nanos};
use super::filter::FlowFilters;
use super::proto::flow::{Flow, LostEvent, LostEventSource};
use super::proto::observer::observer_server::Observer;
use super::proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
    Tls, get_flows_response::ResponseTypes,
};
use super::proto::relay::NodeState;
use super::ring::EventRing;
use super::{Report, Trouble};
use crate::engine::ClusterState;
use crate::model::clock::unix_now_nanos;

/// How many responses may wait for a slow client before the stream waits
/// (and the ring may move past it).
pub const STREAM_BACKLOG: usize = 64;

/// Streams open at once on one server, `GetFlows` and `Notify` together.
pub const MAX_STREAMS: usize = 64;

/// The window `ServerStatus.flows_rate` is measured over, as Hubble's.
const RATE_WINDOW: Duration = Duration::from_secs(60);

type FlowStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;
type AgentEventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<GetAgentEventsResponse, Status>> + Send>,
>;
type DebugEventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<GetDebugEventsResponse, Status>> + Send>,
>;

/// This node as the Hubble server describes it.
#[derive(Clone, Debug)]
pub struct ServedNode {
    /// Its name.
    pub name: String,
    /// Where its Hubble server listens.
    pub address: SocketAddr,
    /// The TLS server name it serves, when it serves TLS.
    pub tls_server_name: Option<String>,
    /// When the server started.
    pub started: Instant,
}

/// What every stream of a server shares: the cap on open streams, the
/// signal that the server stops, and where troubles are reported.
#[derive(Clone)]
pub struct StreamLimits {
    /// One permit per open stream.
    pub streams: Arc<Semaphore>,
    /// Cancelled when the server stops: every stream ends.
    pub stopping: CancellationToken,
    /// Where losses and refusals are counted.
    pub report: Report,
}

impl StreamLimits {
    /// A permit for one more stream.
    ///
    /// # Errors
    /// `ResourceExhausted` past [`MAX_STREAMS`] (reported).
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            (self.report)(Trouble::Rejected(super::Rejection::StreamLimit));
            Status::resource_exhausted(format!(
                "netgov's Hubble server has {MAX_STREAMS} streams open: try again later"
            ))
        })
    }
}

/// The Observer service.
pub struct ObserverService {
    ring: Arc<EventRing>,
    node: ServedNode,
    state: Arc<RwLock<ClusterState>>,
    limits: StreamLimits,
}

impl ObserverService {
    /// The service over `ring`.
    pub fn new(
        ring: Arc<EventRing>,
        node: ServedNode,
        state: Arc<RwLock<ClusterState>>,
        limits: StreamLimits,
    ) -> Self {
        Self {
            ring,
            node,
            state,
            limits,
        }
    }
}

/// The version netgov reports (`netgov 0.1.0+abc123`).
pub fn version() -> String {
    format!("netgov {}+{}", crate::VERSION, crate::REVISION)
}

/// The time window of a request, in Unix nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Window {
    since: Option<i128>,
    until: Option<i128>,
}

impl Window {
    fn contains(&self, flow: &Flow) -> bool {
        let time = flow.time.as_ref().map_or(0, unix_nanos);
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time <= until)
    }

    fn ended_by(&self, flow: &Flow) -> bool {
        let time = flow.time.as_ref().map_or(0, unix_nanos);
        self.until.is_some_and(|until| time > until)
    }
}

/// Which of the matching held flows a request wants first (see the module
/// docs).
fn backlog<T>(request: &GetFlowsRequest, mut matching: Vec<T>) -> Vec<T> {
    let number = usize::try_from(request.number).unwrap_or(usize::MAX);
    if request.first {
        if number > 0 {
            matching.truncate(number);
        }
        matching
    } else if number > 0 {
        matching.split_off(matching.len().saturating_sub(number))
    } else if request.follow && request.since.is_none() {
        Vec::new()
    } else {
        matching
    }
}

/// Sends a client its responses; each send says whether it is still there.
struct Responder {
    tx: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    node_name: String,
    report: Report,
}

impl Responder {
    async fn send(&self, response: ResponseTypes, time: Option<pbjson_types::Timestamp>) -> bool {
        let response = GetFlowsResponse {
            response_types: Some(response),
            node_name: self.node_name.clone(),
            time,
        };
        self.tx.send(Ok(response)).await.is_ok()
    }

    async fn flow(&self, flow: &Flow) -> bool {
        self.send(ResponseTypes::Flow(flow.clone()), flow.time)
            .await
    }

    /// Tells the client `events` were overwritten before it read them, and
    /// counts them.
    async fn lost(&self, events: u64) -> bool {
        (self.report)(Trouble::ClientLost(events));
        let lost = LostEvent {
            source: LostEventSource::HubbleRingBuffer.into(),
            num_events_lost: events,
            ..LostEvent::default()
        };
        let now = Some(timestamp(unix_now_nanos()));
        self.send(ResponseTypes::LostEvents(lost), now).await
    }
}

/// What a stream sends: its backlog (sequence numbers), then, when
/// following, what comes.
struct Plan {
    ring: Arc<EventRing>,
    backlog: Vec<u64>,
    follow: Option<Follow>,
}

/// What a follower reads after its backlog.
struct Follow {
    cursor: u64,
    window: Window,
    filters: FlowFilters,
}

/// Sends the backlog, then, when following, each new matching flow, until
/// the client leaves, a flow is past `until` or the server stops.
async fn stream_flows(responder: Responder, plan: Plan, stopping: CancellationToken) {
    tokio::select! {
        () = send_plan(&responder, plan) => {}
        () = stopping.cancelled() => {}
    }
}

async fn send_plan(responder: &Responder, plan: Plan) {
    let mut lost = 0;
    for seq in plan.backlog {
        let Some(flow) = plan.ring.get(seq) else {
            lost += 1;
            continue;
        };
        if lost > 0 && !responder.lost(std::mem::take(&mut lost)).await {
            return;
        }
        if !responder.flow(&flow).await {
            return;
        }
    }
    if lost > 0 && !responder.lost(lost).await {
        return;
    }
    let Some(mut follow) = plan.follow else {
        return;
    };
    loop {
        tokio::select! {
            () = plan.ring.wait_past(follow.cursor) => {}
            () = responder.tx.closed() => return,
        }
        let batch = plan.ring.read_from(follow.cursor, STREAM_BACKLOG);
        follow.cursor = batch.next;
        if batch.lost > 0 && !responder.lost(batch.lost).await {
            return;
        }
        for flow in batch.events {
            if follow.window.ended_by(&flow) {
                return;
            }
            if follow.window.contains(&flow)
                && follow.filters.matches(&flow)
                && !responder.flow(&flow).await
            {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let request = request.into_inner();
        if request.extensions.is_some() {
            return Err(Status::invalid_argument(
                "GetFlowsRequest.extensions is not supported by netgov",
            ));
        }
        if request.first && request.follow {
            return Err(Status::invalid_argument(
                "GetFlowsRequest: first and follow cannot be combined",
            ));
        }
        let filters = FlowFilters::compile(&request.whitelist, &request.blacklist)
            .map_err(|e| Status::invalid_argument(format!("GetFlowsRequest.{e}")))?;
        let permit = self.limits.open_stream()?;
        let window = Window {
            since: request.since.as_ref().map(unix_nanos),
            until: request.until.as_ref().map(unix_nanos),
        };
        let (held, cursor) = self.ring.snapshot();
        let matching: Vec<u64> = held
            .into_iter()
            .filter(|(_, flow)| window.contains(flow) && filters.matches(flow))
            .map(|(seq, _)| seq)
            .collect();
        let plan = Plan {
            ring: Arc::clone(&self.ring),
            backlog: backlog(&request, matching),
            follow: request.follow.then_some(Follow {
                cursor,
                window,
                filters,
            }),
        };
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        let responder = Responder {
            tx,
            node_name: self.node.name.clone(),
            report: Arc::clone(&self.limits.report),
        };
        let stopping = self.limits.stopping.clone();
        tokio::spawn(async move {
            stream_flows(responder, plan, stopping).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<AgentEventStream>, Status> {
        Err(Status::unimplemented(
            "netgov emits flows only: no agent events",
        ))
    }

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<DebugEventStream>, Status> {
        Err(Status::unimplemented(
            "netgov emits flows only: no debug events",
        ))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let status = self.ring.status();
        let node = Node {
            name: self.node.name.clone(),
            version: version(),
            address: self.node.address.to_string(),
            state: NodeState::NodeConnected.into(),
            tls: Some(Tls {
                enabled: self.node.tls_server_name.is_some(),
                server_name: self.node.tls_server_name.clone().unwrap_or_default(),
            }),
            uptime_ns: self.node.started.elapsed().as_nanos() as u64,
            num_flows: status.held,
            max_flows: status.capacity,
            seen_flows: status.seen,
        };
        Ok(Response::new(GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut namespaces: Vec<Namespace> = state
            .namespaces()
            .map(|(name, _)| Namespace {
                cluster: String::new(),
                namespace: name.to_owned(),
            })
            .collect();
        namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let status = self.ring.status();
        let uptime = self.node.started.elapsed();
        // Over the last minute, or since the start when shorter.
        let window = RATE_WINDOW.min(uptime).max(Duration::from_millis(1));
        let recent = self
            .ring
            .count_since(unix_now_nanos() - window.as_nanos() as i128);
        Ok(Response::new(ServerStatusResponse {
            num_flows: status.held,
            max_flows: status.capacity,
            seen_flows: status.seen,
            uptime_ns: uptime.as_nanos() as u64,
            num_connected_nodes: Some(1.into()),
            num_unavailable_nodes: Some(0.into()),
            unavailable_nodes: Vec::new(),
            version: version(),
            flows_rate: recent as f64 / window.as_secs_f64(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uuid: &str, second: i64) -> Flow {
        Flow {
            uuid: uuid.into(),
            time: Some(pbjson_types::Timestamp {
                seconds: second,
                nanos: 0,
            }),
            ..Flow::default()
        }
    }

    fn uuids(flows: &[Arc<Flow>]) -> Vec<&str> {
        flows.iter().map(|f| f.uuid.as_str()).collect()
    }

    #[test]
    fn the_backlog_a_request_asks_for() {
        let held: Vec<Arc<Flow>> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, u)| Arc::new(event(u, i as i64)))
            .collect();
        // (number, first, follow, since given, the backlog)
        let rows: [(u64, bool, bool, bool, &[&str]); 7] = [
            (2, false, false, false, &["c", "d"]),
            (2, true, false, false, &["a", "b"]),
            (0, true, false, false, &["a", "b", "c", "d"]),
            (0, false, false, false, &["a", "b", "c", "d"]),
            (0, false, true, false, &[]),
            (0, false, true, true, &["a", "b", "c", "d"]),
            (9, false, true, false, &["a", "b", "c", "d"]),
        ];
        for (number, first, follow, since, expected) in rows {
            let since = since.then(pbjson_types::Timestamp::default);
            let request = GetFlowsRequest {
                number,
                first,
                follow,
                since,
                ..GetFlowsRequest::default()
            };
            let got = backlog(&request, held.clone());
            assert_eq!(uuids(&got), expected, "{number} {first} {follow}");
        }
    }

    fn responder(
        tx: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    ) -> (Responder, Arc<std::sync::atomic::AtomicU64>) {
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&lost);
        let report: Report = Arc::new(move |trouble| {
            if let Trouble::ClientLost(events) = trouble {
                counted.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
            }
        });
        (
            Responder {
                tx,
                node_name: "node-a".into(),
                report,
            },
            lost,
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_follower_a_ring_behind_is_told_how_many_it_lost() {
        let ring = Arc::new(EventRing::new(2));
        let (tx, mut rx) = mpsc::channel(16);
        let (responder, counted) = responder(tx);
        let plan = Plan {
            ring: Arc::clone(&ring),
            backlog: Vec::new(),
            follow: Some(Follow {
                cursor: 0,
                window: Window {
                    since: None,
                    until: Some(10_000_000_000),
                },
                filters: FlowFilters::default(),
            }),
        };
        let task = tokio::spawn(stream_flows(responder, plan, CancellationToken::new()));
        // The follower has not run yet: five events, two kept.
        for (i, uuid) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            ring.push(event(uuid, i as i64));
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let response = rx.recv().await.expect("a response").expect("not an error");
            assert_eq!(response.node_name, "node-a");
            seen.push(match response.response_types.expect("a type") {
                ResponseTypes::Flow(flow) => flow.uuid,
                ResponseTypes::LostEvents(lost) => {
                    format!("lost {} from {:?}", lost.num_events_lost, lost.source())
                }
            });
        }
        assert_eq!(seen, ["lost 3 from HubbleRingBuffer", "d", "e"]);
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 3);
        // A flow past `until` ends the stream.
        ring.push(event("late", 11));
        assert!(rx.recv().await.is_none(), "the stream ends");
        task.await.expect("joined");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_following_stream_ends_when_the_server_stops() {
        let ring = Arc::new(EventRing::new(4));
        let (tx, mut rx) = mpsc::channel(4);
        let stopping = CancellationToken::new();
        let plan = Plan {
            ring,
            backlog: Vec::new(),
            follow: Some(Follow {
                cursor: 0,
                window: Window {
                    since: None,
                    until: None,
                },
                filters: FlowFilters::default(),
            }),
        };
        let responder = Responder {
            tx,
            node_name: "node-a".into(),
            report: Arc::new(|_| {}),
        };
        let task = tokio::spawn(stream_flows(responder, plan, stopping.clone()));
        tokio::task::yield_now().await;
        stopping.cancel();
        assert!(rx.recv().await.is_none(), "the stream ends, nothing sent");
        task.await.expect("joined");
    }
}
