//! A judged flow for the agent's unit tests.

use crate::capture::record::{EndReason, FlowRecord, FlowState, Protocol, TcpFlags};
use crate::engine::Decision;
use crate::engine::verdict::{EndpointKind, SideVerdict, Verdict};
use crate::judge::Judgement;
use crate::model::Identity;

/// An allowed TCP flow 10.0.0.1:40000 → 10.0.0.2:80 between `src` and
/// `dst`.
pub fn judged(src: Identity, dst: Identity) -> (FlowRecord, Judgement) {
    let record = FlowRecord {
        src: "10.0.0.1".parse().expect("ip"),
        src_port: 40000,
        dst: "10.0.0.2".parse().expect("ip"),
        dst_port: 80,
        original_dst: None,
        translated_src: None,
        delivered_to_stack: None,
        protocol: Protocol::Tcp,
        packets_out: 1,
        bytes_out: 60,
        packets_in: 0,
        bytes_in: 0,
        state: FlowState::Attempted,
        tcp_flags_out: TcpFlags(0x02),
        tcp_flags_in: TcpFlags(0),
        first_seen: 0,
        last_seen: 0,
        observations: Vec::new(),
        end_reason: EndReason::Exit,
    };
    let side = SideVerdict {
        verdict: Decision::Allow,
        pod: None,
        isolated: false,
        isolating_policies: Vec::new(),
        allowed_by: Vec::new(),
        reason: "".into(),
        tier: None,
        skipped_policies: Vec::new(),
    };
    let judgement = Judgement {
        verdict: Verdict {
            verdict: Decision::Allow,
            egress: side.clone(),
            ingress: side,
            source: EndpointKind::External,
            destination: EndpointKind::External,
            backends: Vec::new(),
            backends_disagree: false,
        },
        denied_by: None,
        denying_tier: None,
        enforcement: None,
        unexpected_egress: false,
        outside_egress: false,
        dst_names: Vec::new(),
        src,
        dst,
        dst_port: 80,
        service: None,
        staged_verdict: None,
        src_context: None,
        dst_context: None,
    };
    (record, judgement)
}
