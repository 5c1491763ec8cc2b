//! Accepting Hubble clients, plain or TLS, within bounds a hostile client
//! cannot move: at most [`MAX_CONNECTIONS`] connections at once (one more
//! is closed at once and counted), each TLS handshake in a task of its own
//! with a deadline (see [`ReloadingTls`]), accept errors backed off rather
//! than spun on, and the port released as soon as the server stops.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::tls::ReloadingTls;
use super::{Rejection, Report, Trouble};

/// Connections open at once: Relay holds one, each CLI one more.
pub const MAX_CONNECTIONS: usize = 128;

/// How long the accept loop waits after an accept error (out of
/// descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A client's connection, plain or TLS.
pub enum Transport {
    /// Plain text.
    Plain(TcpStream),
    /// TLS (boxed: a TLS session is large beside a socket).
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection that holds one of the [`MAX_CONNECTIONS`] permits for as
/// long as it is open.
pub struct Connection {
    transport: Transport,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.transport {
            Transport::Plain(stream) => stream.connect_info(),
            Transport::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts clients until `stopping`, handing each ready connection to the
/// server through `ready`.
pub async fn accept(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    ready: mpsc::Sender<io::Result<Connection>>,
    report: Report,
    stopping: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "Hubble server: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            report(Trouble::Rejected(Rejection::ConnectionLimit));
            continue;
        };
        let Some(tls) = &tls else {
            let connection = Connection {
                transport: Transport::Plain(stream),
                _permit: permit,
            };
            if ready.send(Ok(connection)).await.is_err() {
                return;
            }
            continue;
        };
        let (tls, ready, report) = (Arc::clone(tls), ready.clone(), Arc::clone(&report));
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            match tls.accept(stream).await {
                Ok(stream) => {
                    let connection = Connection {
                        transport: Transport::Tls(Box::new(stream)),
                        _permit: permit,
                    };
                    let _ = ready.send(Ok(connection)).await;
                }
                Err(error) => {
                    report(Trouble::Rejected(Rejection::Handshake));
                    tracing::debug!(%error, ?peer, "Hubble server: TLS handshake failed");
                }
            }
        });
    }
}
