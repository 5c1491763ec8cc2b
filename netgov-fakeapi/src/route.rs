//! What a request asks for: its path's route and its query, decoded, with
//! the list selectors the server understands.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Resource;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A collection, cluster-wide or in one namespace.
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    /// `pods/{name}/portforward` in a namespace.
    PortForward { namespace: String, pod: String },
}

impl Route {
    pub(crate) fn of(path: &str) -> Option<Self> {
        if let Some(resource) = Resource::ALL.into_iter().find(|r| r.path() == path) {
            return Some(Route::Collection {
                resource,
                namespace: None,
            });
        }
        for resource in Resource::ALL {
            let (prefix, plural) = resource.path().rsplit_once('/')?;
            let Some(rest) = path
                .strip_prefix(prefix)
                .and_then(|p| p.strip_prefix("/namespaces/"))
            else {
                continue;
            };
            let mut parts = rest.split('/');
            match (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                (Some(namespace), Some(p), None, _, _) if p == plural => {
                    return Some(Route::Collection {
                        resource,
                        namespace: Some(namespace.to_owned()),
                    });
                }
                (Some(namespace), Some("pods"), Some(pod), Some("portforward"), None)
                    if resource == Resource::Pods =>
                {
                    return Some(Route::PortForward {
                        namespace: namespace.to_owned(),
                        pod: pod.to_owned(),
                    });
                }
                _ => {}
            }
        }
        None
    }
}

/// The query's parameters, percent-decoded (`+` is a space).
pub(crate) fn query(raw: Option<&str>) -> BTreeMap<String, String> {
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, other) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `object` is in `namespace` and matches the query's
/// `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, comma-separated) and
/// `fieldSelector` (`metadata.name`, `metadata.namespace`, `spec.nodeName`,
/// `status.phase` with `=`, `==` or `!=`).
pub(crate) fn selects(
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
    object: &Value,
) -> bool {
    if namespace.is_some_and(|ns| object["metadata"]["namespace"].as_str() != Some(ns)) {
        return false;
    }
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels[key].as_str().map(str::to_owned);
    let field = |path: &str| match path {
        "metadata.name" | "metadata.namespace" | "spec.nodeName" | "status.phase" => {
            let (a, b) = path.split_once('.').expect("dotted");
            Some(object[a][b].as_str().unwrap_or_default().to_owned())
        }
        _ => None,
    };
    let holds = |requirement: &str, get: &dyn Fn(&str) -> Option<String>| {
        if let Some((key, value)) = requirement.split_once("!=") {
            get(key.trim()).as_deref() != Some(value.trim())
        } else if let Some((key, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            get(key.trim()).as_deref() == Some(value.trim())
        } else {
            get(requirement.trim()).is_some()
        }
    };
    let all = |selector: Option<&String>, get: &dyn Fn(&str) -> Option<String>| {
        selector.is_none_or(|s| {
            s.split(',')
                .filter(|r| !r.trim().is_empty())
                .all(|r| holds(r, get))
        })
    };
    all(query.get("labelSelector"), &label) && all(query.get("fieldSelector"), &field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes() {
        let cases = [
            (
                "/api/v1/pods",
                Some(Route::Collection {
                    resource: Resource::Pods,
                    namespace: None,
                }),
            ),
            (
                "/api/v1/namespaces/netgov/pods",
                Some(Route::Collection {
                    resource: Resource::Pods,
                    namespace: Some("netgov".into()),
                }),
            ),
            (
                "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies",
                Some(Route::Collection {
                    resource: Resource::NetworkPolicies,
                    namespace: Some("a".into()),
                }),
            ),
            (
                "/api/v1/namespaces/netgov/pods/agent-x/portforward",
                Some(Route::PortForward {
                    namespace: "netgov".into(),
                    pod: "agent-x".into(),
                }),
            ),
            ("/api/v1/namespaces/netgov/pods/agent-x", None),
            ("/api/v1/namespaces/netgov/services/s/portforward", None),
            ("/api/v1/other", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::of(path), expected, "{path}");
        }
    }

    #[test]
    fn selectors() {
        let pod = json!({"metadata": {"name": "agent-x", "namespace": "netgov", "labels": {"app.kubernetes.io/name": "netgov"}},
                         "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        let cases = [
            (None, "", "", true),
            (
                Some("netgov"),
                "labelSelector=app.kubernetes.io%2Fname%3Dnetgov",
                "",
                true,
            ),
            (Some("other"), "", "", false),
            (
                None,
                "labelSelector=app.kubernetes.io%2Fname%3Dother",
                "",
                false,
            ),
            (
                None,
                "labelSelector=app.kubernetes.io%2Fname",
                "fieldSelector=spec.nodeName%3Dnode-1",
                true,
            ),
            (None, "", "fieldSelector=spec.nodeName%3Dnode-2", false),
            (
                None,
                "labelSelector=tier%21%3Dweb",
                "fieldSelector=status.phase%3D%3DRunning%2Cmetadata.name%3Dagent-x",
                true,
            ),
            (None, "", "fieldSelector=spec.unknown%3Dx", false),
        ];
        for (namespace, labels, fields, expected) in cases {
            let q = query(Some(&format!("{labels}&{fields}")));
            assert_eq!(
                selects(namespace, &q, &pod),
                expected,
                "{namespace:?} {labels} {fields}"
            );
        }
    }
}
