//! The agent's HTTP listener. With host networking it listens on the
//! node's addresses, so every pod on the node can reach it: it must
//! outlast hostile clients.
//!
//! - A client has [`Limits::header_timeout`] to send a request's headers
//!   (half-sent requests are closed, not held forever), and a connection
//!   lives at most [`Limits::lifetime`] (then it is closed gracefully).
//! - At most [`Limits::connections`] connections at once, and
//!   [`Limits::per_peer`] from one address: past either, a new connection
//!   is closed at once (counted in
//!   `netgov_http_connections_rejected_total`). Descriptors never run out,
//!   and a flood from one pod leaves room for kubelet's probes and
//!   Prometheus.
//! - Accept errors (out of descriptors, say) are backed off, 10 ms doubling
//!   to 1 s, never retried in a busy loop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How much one listener lets clients take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most.
    pub connections: usize,
    /// Open connections from one address at most.
    pub per_peer: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may stay open.
    pub lifetime: Duration,
}

impl Default for Limits {
    /// 256 connections, 32 per address, 5 s for headers, an hour per
    /// connection (Prometheus reconnects; `netgov observe --follow`
    /// reconnects when its stream ends).
    fn default() -> Self {
        Self {
            connections: 256,
            per_peer: 32,
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// Open connections, by peer address.
#[derive(Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// One admitted connection; leaves the count when dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(count) = open.by_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, peer: IpAddr, limits: &Limits) -> Option<Admitted> {
    let mut state = open.lock().unwrap_or_else(|e| e.into_inner());
    let from_peer = state.by_peer.get(&peer).copied().unwrap_or(0);
    if state.total >= limits.connections || from_peer >= limits.per_peer {
        return None;
    }
    state.total += 1;
    *state.by_peer.entry(peer).or_default() += 1;
    Some(Admitted {
        open: Arc::clone(open),
        peer,
    })
}

/// Serves `router` on `listener` until `shutdown` completes; open
/// requests are finished first (for at most five seconds). Each
/// connection closed at once for the limits calls `on_rejected`.
///
/// # Errors
/// None today: accept errors are retried with backoff. The `Result`
/// keeps the signature of a server that may fail.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    on_rejected: impl Fn() + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
                }
                Err(error) => {
                    tracing::debug!(%error, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&open, peer.ip(), &limits) else {
            on_rejected();
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            stop_rx.clone(),
            admitted,
        ));
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.lock().unwrap_or_else(|e| e.into_inner()).total > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _admitted: Admitted,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let stopping = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(limits.lifetime) => {
            connection.as_mut().graceful_shutdown();
            finish(connection).await
        }
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            finish(connection).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection");
    }
}

/// Lets a connection that was asked to close finish its request, for at
/// most five seconds.
async fn finish<F: std::future::Future<Output = hyper::Result<()>>>(
    connection: std::pin::Pin<&mut F>,
) -> hyper::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_admitted_within_both_limits() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = Limits {
            connections: 3,
            per_peer: 2,
            ..Limits::default()
        };
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let first = admit(&open, a, &limits).expect("first");
        let _second = admit(&open, a, &limits).expect("second from a");
        assert!(admit(&open, a, &limits).is_none(), "a third from a");
        let _third = admit(&open, b, &limits).expect("b has room");
        assert!(admit(&open, b, &limits).is_none(), "the listener is full");
        drop(first);
        assert!(
            admit(&open, a, &limits).is_some(),
            "a closed one frees a place"
        );
    }
}
