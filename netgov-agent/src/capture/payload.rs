//! What the payload ring carries: the start of a DNS answer delivered into
//! a pod, or of a ClientHello a pod sent, with the packet's endpoints.

use std::net::SocketAddr;

use netgov_common::{PAYLOAD_CAPTURE_BYTES, PayloadEvent, PayloadKind, direction};

use super::flow_table::to_ip;
use crate::model::Protocol;
use crate::model::clock::WallClock;

/// One payload event, borrowed from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// A DNS answer or a ClientHello.
    pub kind: PayloadKind,
    /// The packet's sender (for a DNS answer, the resolver).
    pub src: SocketAddr,
    /// The packet's receiver (for a DNS answer, the pod that asked).
    pub dst: SocketAddr,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Transport payload bytes the packet held; more than `data` holds
    /// when the payload was longer than the kernel copies.
    pub length: usize,
    /// The start of the transport payload.
    pub data: &'a [u8],
    /// When the kernel saw the packet (Unix nanoseconds).
    pub seen: i128,
}

/// Where the payload starts in a ring record.
const DATA_OFFSET: usize = std::mem::offset_of!(PayloadEvent, data);

impl<'a> Payload<'a> {
    /// Decodes a ring record, its kernel time read with `clock`; `None`
    /// for one that is too short or of an unknown kind (a datapath of
    /// another build).
    pub fn decode(record: &'a [u8], clock: &dyn WallClock) -> Option<Self> {
        if record.len() < std::mem::size_of::<PayloadEvent>() {
            return None;
        }
        // SAFETY: the length was checked; the header fields are plain old
        // data read unaligned. The payload is borrowed, not copied.
        let event = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<PayloadHead>()) };
        let kind = PayloadKind::from_u8(event.kind)?;
        let key = &event.key;
        let a = SocketAddr::new(to_ip(&key.addr_a, key.ip_version), key.port_a);
        let b = SocketAddr::new(to_ip(&key.addr_b, key.ip_version), key.port_b);
        let (src, dst) = if event.direction == direction::A_TO_B {
            (a, b)
        } else {
            (b, a)
        };
        let captured = usize::from(event.captured).min(PAYLOAD_CAPTURE_BYTES);
        Some(Self {
            kind,
            src,
            dst,
            protocol: Protocol::from_number(key.protocol),
            length: usize::from(event.length),
            data: &record[DATA_OFFSET..DATA_OFFSET + captured],
            seen: clock.to_unix_nanos(event.timestamp_ns),
        })
    }

    /// Whether the kernel copied less than the packet held.
    pub fn truncated(&self) -> bool {
        self.data.len() < self.length
    }
}

/// The fields of [`PayloadEvent`] before its data, read without copying
/// the data.
#[repr(C)]
#[derive(Clone, Copy)]
struct PayloadHead {
    timestamp_ns: u64,
    kind: u8,
    _hook: u8,
    _pad: [u8; 6],
    key: netgov_common::FlowKey,
    direction: u8,
    _pad1: u8,
    length: u16,
    captured: u16,
}
const _: () = assert!(std::mem::offset_of!(PayloadHead, key) == 16);
const _: () = assert!(
    std::mem::offset_of!(PayloadHead, captured) == std::mem::offset_of!(PayloadEvent, captured)
);

#[cfg(test)]
mod tests {
    use netgov_common::{EventHeader, FlowKey};

    use super::*;

    /// Unix time is the monotonic time plus 1,000 ns.
    struct Clock;

    impl WallClock for Clock {
        fn to_unix_nanos(&self, monotonic_ns: u64) -> i128 {
            i128::from(monotonic_ns) + 1_000
        }
    }

    fn record(kind: u8, direction: u8, data: &[u8], length: u16) -> Vec<u8> {
        let mut event = PayloadEvent {
            header: EventHeader {
                timestamp_ns: 5,
                kind,
                hook: 1,
                _pad: [0; 6],
            },
            key: FlowKey {
                addr_a: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                addr_b: [10, 0, 0, 53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                port_a: 40000,
                port_b: 53,
                ifindex: 7,
                protocol: 17,
                ip_version: 4,
                _pad: [0; 2],
            },
            direction,
            _pad: 0,
            length,
            captured: data.len() as u16,
            _pad2: [0; 6],
            data: [0; PAYLOAD_CAPTURE_BYTES],
        };
        event.data[..data.len()].copy_from_slice(data);
        // SAFETY: plain old data, read as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&raw const event).cast::<u8>(),
                std::mem::size_of::<PayloadEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_record_decodes_to_its_endpoints_and_bytes() {
        let bytes = record(PayloadKind::DnsAnswer as u8, direction::B_TO_A, b"abc", 3);
        assert_eq!(
            Payload::decode(&bytes, &Clock),
            Some(Payload {
                kind: PayloadKind::DnsAnswer,
                src: "10.0.0.53:53".parse().expect("addr"),
                dst: "10.0.0.2:40000".parse().expect("addr"),
                protocol: Protocol::Udp,
                length: 3,
                data: b"abc",
                seen: 1_005,
            })
        );
        let truncated = record(
            PayloadKind::TlsClientHello as u8,
            direction::A_TO_B,
            b"ab",
            9,
        );
        let payload = Payload::decode(&truncated, &Clock).expect("decodes");
        assert_eq!(payload.src, "10.0.0.2:40000".parse().expect("addr"));
        assert!(payload.truncated());
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let bytes = record(PayloadKind::DnsAnswer as u8, 0, b"abc", 3);
        assert_eq!(Payload::decode(&bytes[..100], &Clock), None);
        assert_eq!(Payload::decode(&record(9, 0, b"abc", 3), &Clock), None);
    }
}
