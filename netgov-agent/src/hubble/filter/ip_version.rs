//! `ip_version`.

use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.ip_version.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter.ip_version.clone();
    Ok(vec![Box::new(move |flow| {
        flow.ip
            .as_ref()
            .is_some_and(|ip| wanted.contains(&ip.ip_version))
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;
    use crate::hubble::proto::flow::IpVersion;

    #[test]
    fn rows() {
        let rows: [(&[IpVersion], bool); 3] = [
            (&[IpVersion::IPv4], true),
            (&[IpVersion::IPv6], false),
            (&[IpVersion::IPv6, IpVersion::IPv4], true),
        ];
        for (versions, passed) in rows {
            let filter = FlowFilter {
                ip_version: versions.iter().map(|v| *v as i32).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{versions:?}");
        }
    }
}
