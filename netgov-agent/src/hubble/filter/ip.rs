//! `source_ip`, `destination_ip` and `source_ip_xlated`: an address or a
//! CIDR each.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Check, FilterError};
use crate::hubble::proto::flow::{Flow, FlowFilter};

fn networks(field: &'static str, values: &[String]) -> Result<Vec<IpNet>, FilterError> {
    values
        .iter()
        .map(|value| {
            value
                .parse::<IpNet>()
                .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| FilterError::invalid(field, value, "expected an IP address or a CIDR"))
        })
        .collect()
}

/// Which address of a flow a field is about.
type AddressOf = fn(&Flow) -> &str;

fn check(
    field: &'static str,
    values: &[String],
    address: AddressOf,
) -> Result<Option<Check>, FilterError> {
    if values.is_empty() {
        return Ok(None);
    }
    let wanted = networks(field, values)?;
    Ok(Some(Box::new(move |flow| {
        address(flow)
            .parse::<IpAddr>()
            .is_ok_and(|ip| wanted.iter().any(|net| net.contains(&ip)))
    })))
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    let fields: [(&'static str, &[String], AddressOf); 3] = [
        ("source_ip", &filter.source_ip, |f| {
            f.ip.as_ref().map_or("", |ip| &ip.source)
        }),
        ("destination_ip", &filter.destination_ip, |f| {
            f.ip.as_ref().map_or("", |ip| &ip.destination)
        }),
        ("source_ip_xlated", &filter.source_ip_xlated, |f| {
            f.ip.as_ref().map_or("", |ip| &ip.source_xlated)
        }),
    ];
    let mut checks = Vec::new();
    for (field, values, address) in fields {
        checks.extend(check(field, values, address)?);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::{Outcome, Values, passes};
    use super::*;

    #[test]
    fn rows() {
        let rows: [(Values, Values, Values, Outcome); 7] = [
            (&["10.0.0.1"], &[], &[], Ok(true)),
            (&["10.0.0.0/24"], &["10.0.1.0/24"], &[], Ok(true)),
            (&["10.0.1.2"], &[], &[], Ok(false)),
            (&[], &["10.0.1.2", "fd00::1"], &[], Ok(true)),
            (&[], &["::/0"], &[], Ok(false)),
            (&[], &[], &["10.0.0.0/8"], Ok(false)),
            (&["10.0.0.300"], &[], &[], Err(())),
        ];
        for (source, destination, xlated, expected) in rows {
            let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
            let filter = FlowFilter {
                source_ip: strings(source),
                destination_ip: strings(destination),
                source_ip_xlated: strings(xlated),
                ..FlowFilter::default()
            };
            assert_eq!(
                passes(&filter).map_err(drop),
                expected,
                "{source:?} {destination:?} {xlated:?}"
            );
        }
    }
}
