//! `netgov observe`: an agent's judged flows, live — what `hubble observe`
//! is to Cilium. The agent filters (`/flows?...&follow=true`, newline-
//! delimited JSON) so only matching flows cross the wire; this prints them
//! as JSON lines or a table, and reconnects when the agent ends the stream
//! (its connections live an hour), saying so.
//!
//! The agent is reached at an address (`--server`, e.g. the local end of a
//! `kubectl port-forward`) or by node (`--node`): then the agent pod on
//! that node is found through the API server and reached through its
//! port-forward ([`node`]), so nothing needs to be exposed.

mod node;

pub use node::NodeTarget;

use std::io::Write;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::flowlog::{FlowFilter, RecordedFlow, RecordedIdentity};
use tokio::io::{AsyncRead, AsyncWrite};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObserveFormat {
    /// The agent's flow-log lines, as they come.
    Json,
    /// A row per flow for people.
    Table,
}

/// Which agent to observe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An agent's HTTP address (`host:port`).
    Server(String),
    /// The agent pod on a node, through the API server's port-forward.
    Node(NodeTarget),
}

/// What to observe and how.
#[derive(Clone, Debug)]
pub struct ObserveOptions {
    /// The agent.
    pub target: Target,
    /// The filters, and whether to follow and how many kept flows first.
    pub filter: FlowFilter,
    /// Output format.
    pub format: ObserveFormat,
}

/// Why observing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The agent cannot be reached.
    #[error("cannot reach the agent at {server}: {source}")]
    Connect {
        /// The agent (its address, or its pod and node).
        server: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("HTTP with the agent at {server}: {source}")]
    Http {
        /// The agent (its address, or its pod and node).
        server: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The agent refused the request (a bad filter, or not from loopback).
    #[error("the agent at {server} answered {status}: {message}")]
    Refused {
        /// The agent (its address, or its pod and node).
        server: String,
        /// The HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// The agent's answer is not the JSON array of flows `/flows` sends.
    #[error("the agent at {server} answered something that is not a list of flows: {source}")]
    Answer {
        /// The agent (its address, or its pod and node).
        server: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The filters cannot match anything together.
    #[error(transparent)]
    Filter(#[from] crate::flowlog::filter::FilterError),
    /// Finding or reaching the agent pod on a node failed.
    #[error(transparent)]
    Node(#[from] Box<node::NodeError>),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

impl ObserveOptions {
    fn path(&self, follow: bool, last: Option<usize>) -> String {
        let filter = FlowFilter {
            follow,
            last,
            ..self.filter.clone()
        };
        format!("/flows?{}", filter.to_query())
    }
}

/// Prints the flows `options` asks for to `out` until the agent's kept
/// flows are printed (without `follow`) or forever (with it); returns the
/// flows printed.
///
/// # Errors
/// [`ObserveError`]: the agent unreachable or refusing, or output failing.
pub async fn run(options: &ObserveOptions, out: &mut impl Write) -> Result<u64, ObserveError> {
    options.filter.check()?;
    let mut printed = 0;
    if options.format == ObserveFormat::Table {
        writeln!(out, "{}", table_header()).map_err(ObserveError::Output)?;
    }
    let mut path = options.path(options.filter.follow, options.filter.last);
    loop {
        let (agent, body) = request(&options.target, &path).await?;
        printed += print(body, &agent, options, out).await?;
        if !options.filter.follow {
            return Ok(printed);
        }
        eprintln!("netgov observe: the agent ended the stream; following again");
        path = options.path(true, None);
    }
}

/// Sends `path` to the agent; returns who answered and the body.
async fn request(
    target: &Target,
    path: &str,
) -> Result<(String, hyper::body::Incoming), ObserveError> {
    match target {
        Target::Server(server) => {
            let stream = tokio::net::TcpStream::connect(server)
                .await
                .map_err(|source| ObserveError::Connect {
                    server: server.clone(),
                    source,
                })?;
            Ok((server.clone(), get(stream, server, server, path).await?))
        }
        Target::Node(target) => {
            let forwarded = node::connect(target).await.map_err(Box::new)?;
            let agent = forwarded.agent.clone();
            let forward_error = |message| {
                Err(Box::new(node::NodeError::Forward {
                    agent: agent.clone(),
                    message,
                })
                .into())
            };
            let request = get(forwarded.stream, "localhost", &agent, path);
            tokio::pin!(request);
            let mut error = forwarded.error;
            let mut error_told = false;
            // A failed dial in the pod is told on the error channel, and
            // says more than the stream, which may never answer: whichever
            // comes first.
            loop {
                tokio::select! {
                    message = &mut error, if !error_told => match message {
                        Some(message) => return forward_error(message),
                        None => error_told = true,
                    },
                    result = &mut request => return match result {
                        Ok(body) => Ok((agent.clone(), body)),
                        Err(error_of_stream) => {
                            let told = if error_told {
                                None
                            } else {
                                tokio::time::timeout(std::time::Duration::from_secs(1), error)
                                    .await
                                    .ok()
                                    .flatten()
                            };
                            match told {
                                Some(message) => forward_error(message),
                                None => Err(error_of_stream),
                            }
                        }
                    },
                }
            }
        }
    }
}

/// GET `path` from `host` over `stream`, whose other end is `agent`.
async fn get<S>(
    stream: S,
    host: &str,
    agent: &str,
    path: &str,
) -> Result<hyper::body::Incoming, ObserveError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| ObserveError::Http {
        server: agent.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ObserveError::Connect {
            server: agent.to_owned(),
            source: std::io::Error::other(e),
        })?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    if !status.is_success() {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        return Err(ObserveError::Refused {
            server: agent.to_owned(),
            status: status.as_u16(),
            message: String::from_utf8_lossy(&bytes).trim().to_owned(),
        });
    }
    Ok(response.into_body())
}

/// Prints what `body` brings: newline-delimited flows (following) or one
/// JSON array (the kept flows).
async fn print(
    mut body: hyper::body::Incoming,
    agent: &str,
    options: &ObserveOptions,
    out: &mut impl Write,
) -> Result<u64, ObserveError> {
    let http_error = |source| ObserveError::Http {
        server: agent.to_owned(),
        source,
    };
    let mut printed = 0;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(http_error)?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        if !options.filter.follow {
            continue;
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            printed += print_line(&String::from_utf8_lossy(&line), options.format, out)?;
        }
    }
    if !options.filter.follow {
        let flows: Vec<Value> =
            serde_json::from_slice(&pending).map_err(|source| ObserveError::Answer {
                server: agent.to_owned(),
                source,
            })?;
        for flow in flows {
            printed += print_line(&flow.to_string(), options.format, out)?;
        }
    }
    Ok(printed)
}

fn print_line(
    line: &str,
    format: ObserveFormat,
    out: &mut impl Write,
) -> Result<u64, ObserveError> {
    let line = line.trim_end();
    if line.is_empty() {
        return Ok(0);
    }
    if let Ok(Missed { missed }) = serde_json::from_str(line) {
        eprintln!("netgov observe: {missed} flows skipped (this reader was too slow)");
        return Ok(0);
    }
    match format {
        ObserveFormat::Json => writeln!(out, "{line}"),
        ObserveFormat::Table => match serde_json::from_str::<RecordedFlow>(line) {
            Ok(flow) => writeln!(out, "{}", table_row(&flow)),
            Err(error) => {
                eprintln!("netgov observe: a line the agent sent is not a flow ({error}): {line}");
                return Ok(0);
            }
        },
    }
    .and_then(|()| out.flush())
    .map_err(ObserveError::Output)?;
    Ok(1)
}

fn table_header() -> String {
    format!(
        "{:<8} {:<36} {:<36} {:<6} {:>5} {:<14} {}",
        "TIME", "SOURCE", "DESTINATION", "PROTO", "PORT", "VERDICT", "ENFORCEMENT"
    )
}

/// What the agent sends a follower that fell behind.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Missed {
    missed: u64,
}

/// `namespace/pod`, else `namespace/workload`, else the workload (`world`,
/// a node).
fn end(identity: &RecordedIdentity) -> String {
    match (identity.namespace.is_empty(), &identity.pod) {
        (false, Some(pod)) => format!("{}/{pod}", identity.namespace),
        (false, None) => format!("{}/{}", identity.namespace, identity.workload),
        _ => identity.workload.clone(),
    }
}

/// The destination's first name (outside the cluster), else its end.
fn destination(flow: &RecordedFlow) -> String {
    match flow.dst_names.first() {
        Some(name) => name.name.clone(),
        None => end(&flow.dst_identity),
    }
}

fn table_row(flow: &RecordedFlow) -> String {
    let time = flow.last_seen.0.time();
    format!(
        "{:<8} {:<36} {:<36} {:<6} {:>5} {:<14} {}",
        format!(
            "{:02}:{:02}:{:02}",
            time.hour(),
            time.minute(),
            time.second()
        ),
        end(&flow.src_identity),
        destination(flow),
        flow.protocol.name(),
        flow.judged_dst_port,
        flow.verdict.as_str(),
        flow.enforcement.map_or("-", |e| e.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_encoded_filters() {
        let options = ObserveOptions {
            target: Target::Server("127.0.0.1:9464".into()),
            filter: FlowFilter {
                from_namespace: Some("ml".parse().expect("a namespace")),
                to_pod: Some("shop/b".parse().expect("a pod filter")),
                follow: true,
                last: Some(5),
                ..FlowFilter::default()
            },
            format: ObserveFormat::Json,
        };
        assert_eq!(
            options.path(true, Some(5)),
            "/flows?from_namespace=ml&to_pod=shop%2Fb&follow=true&last=5"
        );
    }

    #[test]
    fn table_rows_name_pods_workloads_and_the_world() {
        let mut flow = serde_json::json!({
            "format": 1, "src": "10.0.0.1", "src_port": 40000, "dst": "203.0.113.7", "dst_port": 443,
            "first_seen": "2026-11-29T07:10:10Z", "last_seen": "2026-11-29T07:10:11.5Z",
            "src_identity": {"namespace": "ml", "pod": "trainer-0", "workload": "trainer"},
            "dst_identity": {"namespace": "", "workload": "world"},
            "protocol": "TCP", "judged_dst_port": 443, "verdict": "deny", "enforcement": "gap",
        });
        let row = |flow: &Value| {
            table_row(&serde_json::from_value(flow.clone()).expect("a flow-log line"))
        };
        assert_eq!(
            row(&flow),
            format!(
                "{:<8} {:<36} {:<36} {:<6} {:>5} {:<14} {}",
                "07:10:11", "ml/trainer-0", "world", "TCP", 443, "deny", "gap"
            )
        );
        flow["dst_names"] = serde_json::json!([
            {"name": "upload.example", "learned": "dns"},
            {"name": "cdn.example", "learned": "sni"},
        ]);
        assert_eq!(
            row(&flow),
            format!(
                "{:<8} {:<36} {:<36} {:<6} {:>5} {:<14} {}",
                "07:10:11", "ml/trainer-0", "upload.example", "TCP", 443, "deny", "gap"
            )
        );
    }
}
