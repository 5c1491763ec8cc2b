//! `pods/{name}/portforward?ports=P` over WebSocket with the
//! `v4.channel.k8s.io` subprotocol, as the API server relays it from the
//! kubelet: the first message on the port's data (0) and error (1) channels
//! carries the port number (little-endian), then channel 0 carries the
//! bytes both ways, each message prefixed with its channel.
//!
//! Like a container runtime, it dials the port on loopback in the pod's
//! network namespace: the test process's own, or the one set with
//! [`FakeApiServer::set_pod_network`](crate::FakeApiServer::set_pod_network)
//! (a test bed node, where a host-network pod such as netgov's agent
//! listens). One port per request.

use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::serve::{Body, full, status};

const PROTOCOL: &str = "v4.channel.k8s.io";

/// Answers the upgrade and relays the connection in the background.
pub(crate) fn handle(
    mut request: Request<hyper::body::Incoming>,
    port: Option<u16>,
    network: Option<PathBuf>,
) -> Response<Body> {
    let Some(port) = port else {
        return full(
            StatusCode::BAD_REQUEST,
            status(
                400,
                "BadRequest",
                "exactly one port in `ports` is supported",
            ),
        );
    };
    let headers = request.headers();
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == PROTOCOL));
    let Some(key) = headers.get("sec-websocket-key").filter(|_| offered) else {
        return full(
            StatusCode::BAD_REQUEST,
            status(
                400,
                "BadRequest",
                "a WebSocket upgrade offering v4.channel.k8s.io is required",
            ),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        relay(socket, port, network).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", PROTOCOL)
        .body(
            Empty::<Bytes>::new()
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("response")
}

/// Connects to `port` on loopback, in the network namespace at `network`
/// if one is given.
async fn dial(port: u16, network: Option<PathBuf>) -> std::io::Result<tokio::net::TcpStream> {
    let Some(network) = network else {
        return tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    };
    // Joining a namespace is per thread: a thread of its own joins it,
    // connects and ends; the socket stays in that namespace.
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connect = || -> std::io::Result<std::net::TcpStream> {
            let file = std::fs::File::open(&network)?;
            // SAFETY: a valid namespace descriptor, for this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        };
        let _ = sender.send(connect());
    });
    let stream = receiver
        .await
        .map_err(|_| std::io::Error::other("dialing thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}

async fn relay<S>(socket: WebSocketStream<S>, port: u16, network: Option<PathBuf>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = socket.split();
    let [low, high] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if to_client
            .send(Message::binary(vec![channel, low, high]))
            .await
            .is_err()
        {
            return;
        }
    }
    let target = match dial(port, network).await {
        Ok(target) => target,
        Err(error) => {
            let mut message = vec![1u8];
            message.extend_from_slice(format!("dial 127.0.0.1:{port}: {error}").as_bytes());
            let _ = to_client.send(Message::binary(message)).await;
            // The connection stays open until the client ends it, as the
            // API server's does: closed at once, a client whose request was
            // on its way fails writing it before it reads the error (a
            // race in kube-rs's forwarder that made agent_observe flaky).
            let until_client_closes = async {
                while let Some(Ok(message)) = from_client.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            };
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(10), until_client_closes).await;
            let _ = to_client.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut target_read, mut target_write) = target.into_split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            let forwarded = match message {
                Message::Binary(data) if data.first() == Some(&0) => {
                    target_write.write_all(&data[1..]).await.is_ok()
                }
                Message::Close(_) => false,
                _ => true,
            };
            if !forwarded {
                break;
            }
        }
        let _ = target_write.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            buffer[0] = 0;
            match target_read.read(&mut buffer[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::binary(buffer[..=n].to_vec());
                    if to_client.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    // The pod closing its end ends the forward, as with a real runtime.
    tokio::select! {
        () = downstream => {}
        () = async { upstream.await; std::future::pending::<()>().await } => {}
    }
}
