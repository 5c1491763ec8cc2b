//! Who owns a clsact filter (netlink attach mode). Filters outlive their
//! process, so a start must remove what a killed netgov left — but never
//! the filters of another netgov that is running (a second capture beside
//! the agent would blind it, silently).
//!
//! Each process picks a random filter handle and, for as long as it
//! lives, binds an abstract unix socket named after it. Abstract sockets
//! belong to the network namespace (as the interfaces do) and vanish with
//! their process, even after SIGKILL: a filter of ours whose handle has no
//! bound socket is stale. Raw netlink here, because aya 0.14 removes
//! filters by program name only (every process's at once).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One of our filters found on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OurFilter {
    /// TC egress (`true`) or ingress.
    pub egress: bool,
    /// `prio << 16 | protocol`, as the kernel reports it.
    pub info: u32,
    /// The filter's handle: its owner.
    pub handle: u32,
}

/// This process's claim on its filter handle, and the netlink socket its
/// filters are listed and deleted through (opened once: the filters of
/// every interface are checked at every drain).
pub struct Ownership {
    handle: u32,
    _claim: UnixListener,
    netlink: Socket,
}

fn claim_name(handle: u32) -> String {
    format!("netgov-tc-owner-{handle:08x}")
}

fn claim(handle: u32) -> io::Result<UnixListener> {
    UnixListener::bind_addr(&UnixAddr::from_abstract_name(claim_name(handle))?)
}

impl Ownership {
    /// Claims a random handle no live process holds.
    ///
    /// # Errors
    /// When no abstract socket can be bound.
    pub fn claim() -> io::Result<Self> {
        let mut last = io::Error::other("no handle tried");
        for _ in 0..16 {
            let mut bytes = [0u8; 4];
            // SAFETY: a valid buffer of the length given.
            let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 4, 0) };
            // Handle 0 asks the kernel to choose; keep clear of it.
            let handle = u32::from_ne_bytes(bytes) | 1;
            if filled != 4 {
                last = io::Error::last_os_error();
                continue;
            }
            match claim(handle) {
                Ok(listener) => {
                    return Ok(Self {
                        handle,
                        _claim: listener,
                        netlink: socket()?,
                    });
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The handle this process attaches its filters with.
    pub fn handle(&self) -> u32 {
        self.handle
    }
}

/// Whether a live process holds `handle`.
pub fn owner_alive(handle: u32) -> bool {
    match claim(handle) {
        // Bound now: nobody held it (released again on drop).
        Ok(_) => false,
        Err(error) => error.kind() == io::ErrorKind::AddrInUse,
    }
}

fn parent(egress: bool) -> TcHandle {
    TcHandle {
        major: u16::MAX,
        minor: if egress {
            TcHandle::MIN_EGRESS
        } else {
            TcHandle::MIN_INGRESS
        },
    }
}

fn request(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(message));
    message.finalize();
    let mut buffer = vec![0; message.buffer_len()];
    message.serialize(&mut buffer);
    buffer
}

fn socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    Ok(socket)
}

impl Ownership {
    /// Our filters (a `bpf` filter running one of `names`) on `ifindex`,
    /// both hooks, whoever's handle they carry.
    ///
    /// # Errors
    /// When netlink fails.
    pub fn our_filters(&self, ifindex: u32, names: &[&str]) -> io::Result<Vec<OurFilter>> {
        let socket = &self.netlink;
        let mut found = Vec::new();
        let mut buffer = Vec::with_capacity(16 * 1024);
        for egress in [false, true] {
            let mut message = TcMessage::default();
            message.header = TcHeader {
                index: ifindex as i32,
                parent: parent(egress),
                ..TcHeader::default()
            };
            let bytes = request(
                RouteNetlinkMessage::GetTrafficFilter(message),
                NLM_F_REQUEST | NLM_F_DUMP,
            );
            socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
            'dump: loop {
                buffer.clear();
                socket.recv(&mut buffer, 0)?;
                let mut offset = 0;
                while offset < buffer.len() {
                    let message =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..])
                            .map_err(io::Error::other)?;
                    let length = message.header.length as usize;
                    match message.payload {
                        NetlinkPayload::Done(_) => break 'dump,
                        // No clsact on the interface: no filters.
                        NetlinkPayload::Error(error) if error.code.is_some() => break 'dump,
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(tc))
                            if runs_one_of(&tc.attributes, names) =>
                        {
                            found.push(OurFilter {
                                egress,
                                info: tc.header.info,
                                handle: tc.header.handle.into(),
                            });
                        }
                        _ => {}
                    }
                    if length == 0 {
                        break;
                    }
                    offset += length;
                }
            }
        }
        Ok(found)
    }

    /// Deletes `filter` from `ifindex` (one already gone is not an error).
    ///
    /// # Errors
    /// When netlink fails.
    pub fn delete(&self, ifindex: u32, filter: OurFilter) -> io::Result<()> {
        let socket = &self.netlink;
        let mut message = TcMessage::default();
        message.header = TcHeader {
            index: ifindex as i32,
            parent: parent(filter.egress),
            handle: filter.handle.into(),
            info: filter.info,
            ..TcHeader::default()
        };
        let bytes = request(
            RouteNetlinkMessage::DelTrafficFilter(message),
            NLM_F_REQUEST | NLM_F_ACK,
        );
        socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        let mut buffer = Vec::with_capacity(4096);
        socket.recv(&mut buffer, 0)?;
        let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer)
            .map_err(io::Error::other)?;
        match answer.payload {
            NetlinkPayload::Error(error) => match error.code {
                Some(code) if code.get() != -libc::ENOENT => {
                    Err(io::Error::from_raw_os_error(-code.get()))
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

fn runs_one_of(attributes: &[TcAttribute], names: &[&str]) -> bool {
    let is_bpf = attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "bpf"));
    is_bpf
        && attributes.iter().any(|a| match a {
            TcAttribute::Options(options) => options.iter().any(|o| {
                matches!(o, TcOption::Bpf(TcFilterBpfOption::ProgName(name))
                    if names.iter().any(|ours| name.starts_with(ours)))
            }),
            _ => false,
        })
}
