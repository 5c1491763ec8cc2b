//! `tcp_flags`: a flow passes a set of flags when it has every one of
//! them (netgov's flows carry the flags their initiator sent).

use super::{Check, FilterError};
use crate::hubble::proto::flow::layer4::Protocol;
use crate::hubble::proto::flow::{FlowFilter, TcpFlags};

fn bits(flags: &TcpFlags) -> u16 {
    [
        flags.fin, flags.syn, flags.rst, flags.psh, flags.ack, flags.urg, flags.ece, flags.cwr,
        flags.ns,
    ]
    .iter()
    .enumerate()
    .fold(0, |bits, (i, set)| bits | (u16::from(*set) << i))
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.tcp_flags.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<u16> = filter.tcp_flags.iter().map(bits).collect();
    Ok(vec![Box::new(move |flow| {
        let Some(Protocol::Tcp(tcp)) = flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) else {
            return false;
        };
        let Some(have) = tcp.flags.as_ref().map(bits) else {
            return false;
        };
        wanted.iter().any(|want| have & want == *want)
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let flags = |syn, ack, fin| TcpFlags {
            syn,
            ack,
            fin,
            ..TcpFlags::default()
        };
        let rows = [
            (vec![flags(true, false, false)], true),
            (vec![flags(true, true, false)], true),
            (vec![flags(false, false, true)], false),
            (
                vec![flags(false, false, true), flags(false, true, false)],
                true,
            ),
        ];
        for (wanted, passed) in rows {
            let filter = FlowFilter {
                tcp_flags: wanted.clone(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{wanted:?}");
        }
    }
}
