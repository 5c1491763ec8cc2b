//! The filter's table: each row a `/flows` query, a flow, and whether it
//! passes; then the values that cannot match anything.

use super::*;
use crate::agent::test_support::judged;
use crate::model::Name;

fn pod(namespace: &str, pod: &str) -> Identity {
    Identity {
        namespace: Name::from(namespace),
        pod: Some(Name::from(pod)),
        workload: Name::from(pod),
    }
}

/// `/flows?query` as the agent reads it.
fn filter(query: &str) -> Result<FlowFilter, String> {
    let filter: FlowFilter = serde_urlencoded::from_str(query).map_err(|e| e.to_string())?;
    filter.check().map_err(|e| e.to_string())?;
    Ok(filter)
}

#[test]
fn rows() {
    // From shop/backend-0 to ml/server-0, TCP, judged port 80, allowed.
    let (record, judgement) = judged(pod("shop", "backend-0"), pod("ml", "server-0"));
    let rows = [
        ("", true),
        ("from_pod=shop/b", true),
        ("from_pod=shop/backend-0", true),
        ("from_pod=shop/", true),
        ("from_pod=ml/b", false),
        ("from_pod=b", true),
        ("from_pod=backend-1", false),
        ("from_pod=b&from_namespace=shop", true),
        ("from_pod=b&from_namespace=ml", false),
        ("to_pod=ml/server", true),
        ("to_pod=shop/server", false),
        ("pod=ml/s", true),
        ("pod=s&namespace=shop", false),
        ("pod=s&namespace=ml", true),
        ("namespace=shop", true),
        ("namespace=other", false),
        ("protocol=tcp&port=80", true),
        ("protocol=UDP", false),
        ("port=8080", false),
        ("verdict=allow", true),
        ("verdict=deny", false),
        ("enforcement=gap", false),
        ("to_namespace=", false),
        ("namespace=", false),
        ("protocol=IP-47", false),
        ("pod=ml/&from_namespace=shop&to_namespace=ml", true),
    ];
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(query, expected)| {
            let got = filter(query).map(|f| f.matches(&record, &judgement));
            (got != Ok(*expected)).then(|| format!("{query}: expected {expected}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // An empty namespace is the ends that have none: here, the world.
    let (record, judgement) = judged(pod("shop", "backend-0"), Identity::world());
    let to_world = filter("to_namespace=").expect("a valid query");
    assert!(to_world.matches(&record, &judgement));
}

#[test]
fn values_that_cannot_match_are_errors() {
    let rows = [
        ("to_pod=", "an empty pod filter matches nothing"),
        ("to_pod=Shop/b", "`Shop` is not a namespace name"),
        ("to_pod=shop/B", "`B` cannot start a pod name"),
        ("namespace=-a", "`-a` is not a namespace name"),
        ("to_pod=/b", "`` is not a namespace name"),
        (
            "namespace=dev&from_namespace=shop&to_namespace=ml",
            "`namespace` asks for namespace `dev` at either end",
        ),
        (
            "pod=dev/x&from_namespace=shop&to_namespace=ml",
            "`pod` asks for namespace `dev` at either end",
        ),
        (
            "to_pod=shop/b&to_namespace=ml",
            "`to_pod` names namespace `shop` but `to_namespace` is `ml`",
        ),
        (
            "protocol=gre",
            "`gre` is not one of TCP, UDP, SCTP, ICMP, ICMPv6",
        ),
        (
            "verdict=maybe",
            "`maybe` is not one of allow, deny, not-applicable",
        ),
        ("pods=x", "unknown field `pods`"),
    ];
    for (query, expected) in rows {
        let error = filter(query).expect_err(query);
        assert!(error.contains(expected), "{query}: {error}");
    }
}

#[test]
fn the_query_round_trips() {
    let query = "pod=ml%2Fs&to_pod=server-0&protocol=TCP&port=8080&verdict=deny&enforcement=gap&follow=true&last=5";
    let parsed = filter(query).expect("a valid query");
    assert_eq!(parsed.to_query(), query);
    assert_eq!(filter(&parsed.to_query()), Ok(parsed));
}
