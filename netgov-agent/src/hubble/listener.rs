//! Accepting Hubble clients, plain or TLS, within bounds a hostile client
//! cannot move:
//! - at most [`MAX_CONNECTIONS`] connections at once, and
//!   [`MAX_CONNECTIONS_PER_ADDRESS`] from one address (one more is closed
//!   at once and counted), so one pod cannot lock Relay out;
//! - a connection that sends nothing within [`FIRST_BYTES_TIMEOUT`] is
//!   closed (HTTP/2's keepalive only starts once its handshake is done);
//!   a TLS handshake has its own deadline (see [`ReloadingTls`]);
//! - running out of descriptors or memory is backed off rather than spun
//!   on; a client's own failed connection is not;
//! - the port is released as soon as the server stops.
//!
//! A TLS client that completes its handshake and then stays silent keeps
//! its slot until its address's cap: with client certificates required (the
//! manifests' default) only a certificate holder can.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

/// Connections open at once from one address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 16;

/// How long a new plain connection may stay silent.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A connection that holds its permits (one of [`MAX_CONNECTIONS`], one of
/// its address's) for as long as it is open.
pub struct Connection {
    transport: Transport,
    _permits: Permits,
}

/// The two permits of a connection.
struct Permits {
    _total: OwnedSemaphorePermit,
    _address: AddressPermit,
}

/// One of an address's [`MAX_CONNECTIONS_PER_ADDRESS`]; given back on drop.
struct AddressPermit {
    address: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressPermit {
    fn take(open: &Arc<Mutex<HashMap<IpAddr, usize>>>, address: IpAddr) -> Option<Self> {
        let mut counts = open.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Self {
            address,
            open: Arc::clone(open),
        })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Whether an accept error is the machine's (back off) rather than one
/// client's (go on at once).
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
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
    let total = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_resource_exhaustion(&error) => {
                tracing::warn!(%error, "Hubble server: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "Hubble server: a connection failed as it was accepted");
                continue;
            }
        };
        let permits = Arc::clone(&total)
            .try_acquire_owned()
            .ok()
            .zip(AddressPermit::take(&per_address, peer.ip()));
        let Some((total_permit, address_permit)) = permits else {
            report(Trouble::Rejected(Rejection::ConnectionLimit));
            continue;
        };
        let permits = Permits {
            _total: total_permit,
            _address: address_permit,
        };
        let (tls, ready, report, stopping) = (
            tls.clone(),
            ready.clone(),
            Arc::clone(&report),
            stopping.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = open(stream, tls, permits, ready, report) => {}
                () = stopping.cancelled() => {}
            }
        });
    }
}

/// Makes a connection of an accepted socket (waiting for its first bytes,
/// or its TLS handshake) and hands it to the server.
async fn open(
    stream: TcpStream,
    tls: Option<Arc<ReloadingTls>>,
    permits: Permits,
    ready: mpsc::Sender<io::Result<Connection>>,
    report: Report,
) {
    let peer = stream.peer_addr().ok();
    let transport = match tls {
        None => match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.readable()).await {
            Ok(Ok(())) => Transport::Plain(stream),
            _ => {
                report(Trouble::Rejected(Rejection::Silent));
                return;
            }
        },
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => Transport::Tls(Box::new(stream)),
            Err(error) => {
                report(Trouble::Rejected(Rejection::Handshake));
                tracing::debug!(%error, ?peer, "Hubble server: TLS handshake failed");
                return;
            }
        },
    };
    let connection = Connection {
        transport,
        _permits: permits,
    };
    let _ = ready.send(Ok(connection)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn one_address_gets_its_share_and_one_more_is_closed_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (ready, mut connections) = mpsc::channel(64);
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&refused);
        let report: Report = Arc::new(move |trouble| {
            if trouble == Trouble::Rejected(Rejection::ConnectionLimit) {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let stopping = CancellationToken::new();
        tokio::spawn(accept(listener, None, ready, report, stopping.clone()));
        let mut clients = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            let mut client = TcpStream::connect(address).await.expect("connect");
            tokio::io::AsyncWriteExt::write_all(&mut client, b"x")
                .await
                .expect("first byte");
            clients.push(client);
        }
        let mut accepted = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            accepted.push(connections.recv().await.expect("handed over").expect("ok"));
        }
        let mut one_more = TcpStream::connect(address).await.expect("connect");
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), one_more.read(&mut buffer))
            .await
            .expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A connection closed gives its slot back.
        drop(accepted.pop());
        let mut again = TcpStream::connect(address).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut again, b"x")
            .await
            .expect("first byte");
        assert!(connections.recv().await.expect("handed over").is_ok());
        stopping.cancel();
    }
}
