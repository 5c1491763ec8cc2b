//! Reading what the agent exports, for tests, the demo's end-to-end step
//! and the benchmarks: samples of the Prometheus text format, and the
//! netgov metric names a PromQL expression mentions.

use std::collections::BTreeSet;

/// The sum of the samples of metric `name` whose line contains every one
/// of `filters` (label matchers written as they appear, e.g.
/// `protocol="UDP"`); 0 when there is none.
pub fn sum_samples(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `netgov_*` metric names `expr` (PromQL) mentions.
pub fn netgov_metric_names(expr: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("netgov_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP netgov_ready 1 or 0\nnetgov_ready 1\n\
                    netgov_flows_total{protocol=\"UDP\",verdict=\"deny\"} 3\n\
                    netgov_flows_total{protocol=\"UDP\",verdict=\"allow\"} 4\n\
                    netgov_flows_total{protocol=\"TCP\",verdict=\"deny\"} 5\n\
                    netgov_flows_totally 100\n";
        assert_eq!(sum_samples(text, "netgov_flows_total", &[]), 12.0);
        assert_eq!(
            sum_samples(text, "netgov_flows_total", &["protocol=\"UDP\""]),
            7.0
        );
        assert_eq!(sum_samples(text, "netgov_ready", &[]), 1.0);
        assert_eq!(sum_samples(text, "netgov_missing", &[]), 0.0);
    }

    #[test]
    fn metric_names_are_found_in_promql() {
        let expr = r#"sum(increase(netgov_flows_total{a="netgov"}[5m])) / max(netgov_ready) or up"#;
        assert_eq!(
            netgov_metric_names(expr),
            BTreeSet::from(["netgov_flows_total", "netgov_ready"])
        );
    }
}
