//! The flow the filters' table tests look at.

use crate::hubble::proto::flow::{
    CiliumEventType, Endpoint, Flow, FlowType, Ip, IpVersion, Layer4, Service, Tcp, TcpFlags,
    TrafficDirection, Verdict, Workload, layer4,
};

/// shop/a-1 (Deployment a, app=a) → shop/b-0 (StatefulSet b, app=b) through
/// Service shop/b-svc, TCP 40000 → 80 with SYN and ACK, audited (denied
/// but delivered) at b's ingress, on node-a; b is also `api.example.com`.
pub fn flow() -> Flow {
    let endpoint = |pod: &str, app: &str, kind: &str, identity: u32| Endpoint {
        identity,
        namespace: "shop".into(),
        pod_name: pod.into(),
        labels: vec![
            format!("k8s:app={app}"),
            "k8s:io.cilium.k8s.namespace.labels.team=retail".into(),
            "k8s:io.kubernetes.pod.namespace=shop".into(),
        ],
        workloads: vec![Workload {
            name: app.into(),
            kind: kind.into(),
        }],
        ..Endpoint::default()
    };
    Flow {
        uuid: "7c1f0b8e-0000-4000-8000-000000000001".into(),
        verdict: Verdict::Audit.into(),
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.1.2".into(),
            ip_version: IpVersion::IPv4.into(),
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(TcpFlags {
                    syn: true,
                    ack: true,
                    ..TcpFlags::default()
                }),
            })),
        }),
        source: Some(endpoint("a-1", "a", "Deployment", 300)),
        destination: Some(endpoint("b-0", "b", "StatefulSet", 400)),
        r#type: FlowType::L3L4.into(),
        node_name: "node-a".into(),
        destination_names: vec!["api.example.com".into()],
        event_type: Some(CiliumEventType {
            r#type: 5,
            sub_type: 0,
        }),
        destination_service: Some(Service {
            name: "b-svc".into(),
            namespace: "shop".into(),
        }),
        traffic_direction: TrafficDirection::Ingress.into(),
        is_reply: Some(false.into()),
        ..Flow::default()
    }
}

/// Whether a filter built from `filter` passes the test flow.
pub fn passes(filter: &crate::hubble::proto::flow::FlowFilter) -> Result<bool, super::FilterError> {
    let compiled = super::Compiled::new(filter)?;
    Ok(compiled.matches(&flow()))
}

/// A table row's expected outcome: passes or not, or the filter is refused.
pub type Outcome = Result<bool, ()>;

/// Values of a field in a table row.
pub type Values = &'static [&'static str];
