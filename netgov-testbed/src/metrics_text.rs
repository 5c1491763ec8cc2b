//! Reading what the agent exports, for every test, the demo's end-to-end
//! step and the benchmarks: one parser of the Prometheus/OpenMetrics text
//! format's samples, and the netgov metric names a PromQL expression
//! mentions.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as exposed (with `_total` for counters).
    pub name: String,
    /// The labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of `text` (comments and malformed lines skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key.trim_start_matches(',').to_owned(), value);
            inner = after[end + 1..].trim_start_matches(',');
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples of metric `name` whose labels include every one
/// of `labels` (exact values); `None` when there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// [`sample`], 0 when there is none.
pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
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
    fn samples_are_summed_by_name_and_exact_labels() {
        let text = "# HELP netgov_ready 1 or 0\nnetgov_ready 1\n\
                    netgov_flows_total{protocol=\"UDP\",verdict=\"deny\"} 3\n\
                    netgov_flows_total{protocol=\"UDP\",verdict=\"allow\"} 4\n\
                    netgov_flows_total{protocol=\"TCP\",verdict=\"deny\"} 5\n\
                    netgov_flows_total{protocol=\"UDPX\",verdict=\"deny\"} 50\n\
                    netgov_flows_totally 100\n";
        assert_eq!(sum_samples(text, "netgov_flows_total", &[]), 62.0);
        assert_eq!(
            sum_samples(text, "netgov_flows_total", &[("protocol", "UDP")]),
            7.0
        );
        assert_eq!(sample(text, "netgov_ready", &[]), Some(1.0));
        assert_eq!(sample(text, "netgov_missing", &[]), None);
        assert_eq!(sum_samples(text, "netgov_missing", &[]), 0.0);
    }

    #[test]
    fn label_values_are_unescaped() {
        let parsed = samples("m{a=\"x\\\"y\",b=\"1,2}\"} 2.5\n");
        assert_eq!(
            parsed,
            [Sample {
                name: "m".into(),
                labels: BTreeMap::from([("a".into(), "x\"y".into()), ("b".into(), "1,2}".into())]),
                value: 2.5,
            }]
        );
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
