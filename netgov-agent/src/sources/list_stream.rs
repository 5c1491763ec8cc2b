//! A LIST read as it arrives: the response body is parsed incrementally and
//! each item handed over as soon as it is complete, so a list costs memory
//! for the items in flight, never for the whole response.
//!
//! Why not kube-rs's `Api::list`: it collects the body and decodes the whole
//! list at once. An API server (or a proxy in front of it) that ignores
//! `limit`, or a list served from the watch cache (`resourceVersion=0`, which
//! is never paginated before Kubernetes 1.33), then hands one agent a 50,000
//! pod response: about 2 GB resident while decoding, four times the
//! DaemonSet's memory limit.

use std::fmt;

use kube::api::{ApiResource, DynamicObject, ListParams};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::io::SyncIoBridge;

/// Items decoded but not yet applied: enough to keep the parser busy while
/// the state is updated, few enough to cost nothing.
const ITEMS_IN_FLIGHT: usize = 64;

/// Why a list page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The request could not be built from its parameters.
    #[error("cannot build the list request: {0}")]
    Build(#[source] kube::core::request::Error),
    /// The API server refused or could not be reached.
    #[error("list request failed: {0}")]
    Request(#[source] kube::Error),
    /// The response is not a Kubernetes list (malformed JSON, cut short,
    /// or a read timeout while it arrived).
    #[error("list response unreadable: {0}")]
    Decode(#[source] serde_json::Error),
    /// The task reading the response ended abnormally.
    #[error("list reader stopped: {0}")]
    Reader(#[source] tokio::task::JoinError),
}

/// The end of a page: where the list stands and how to get the next page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageEnd {
    /// `metadata.resourceVersion` of the list.
    pub resource_version: String,
    /// `metadata.continue`, while more pages remain.
    pub continue_token: Option<String>,
}

/// Reads one page of `resource`'s list, calling `item` for each object in
/// order as soon as it has been decoded.
///
/// # Errors
/// [`ListError`]; items handed over before the error stay handed over.
pub async fn list_page(
    client: &kube::Client,
    resource: &ApiResource,
    params: &ListParams,
    mut item: impl FnMut(Value),
) -> Result<PageEnd, ListError> {
    let url = <DynamicObject as kube::Resource>::url_path(resource, None);
    let request = kube::core::Request::new(url)
        .list(params)
        .map_err(ListError::Build)?;
    let body = client
        .request_stream(request)
        .await
        .map_err(ListError::Request)?;
    let (sender, mut receiver) = mpsc::channel(ITEMS_IN_FLIGHT);
    // serde_json parses from a blocking reader; the body is bridged to one
    // on a blocking thread, which hands items back through a bounded channel.
    let reader = tokio::task::spawn_blocking(move || {
        let reader = std::io::BufReader::with_capacity(
            64 * 1024,
            SyncIoBridge::new(Box::pin(body.compat())),
        );
        let mut decoder = serde_json::Deserializer::from_reader(reader);
        let end = ListSeed { items: &sender }.deserialize(&mut decoder)?;
        decoder.end()?;
        Ok(end)
    });
    while let Some(value) = receiver.recv().await {
        item(value);
    }
    reader
        .await
        .map_err(ListError::Reader)?
        .map_err(ListError::Decode)
}

/// Visits a list object: keeps `metadata`'s version and continue token,
/// streams `items`, skips everything else.
struct ListSeed<'a> {
    items: &'a mpsc::Sender<Value>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = PageEnd;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PageEnd, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = PageEnd;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes list object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PageEnd, A::Error> {
        #[derive(serde::Deserialize, Default)]
        struct ListMeta {
            #[serde(rename = "resourceVersion", default)]
            resource_version: String,
            #[serde(rename = "continue", default)]
            continue_token: Option<String>,
        }
        let mut meta = None;
        let mut items = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => meta = Some(map.next_value::<ListMeta>()?),
                "items" => {
                    map.next_value_seed(ItemsSeed { items: self.items })?;
                    items = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let meta = meta.ok_or_else(|| de::Error::missing_field("metadata"))?;
        // Without `items` it is not a list (a Status, a proxy's page): taken
        // as empty, a relist would delete every object.
        if !items {
            return Err(de::Error::missing_field("items"));
        }
        Ok(PageEnd {
            resource_version: meta.resource_version,
            // The server sends `""` on the last page.
            continue_token: meta.continue_token.filter(|token| !token.is_empty()),
        })
    }
}

/// Streams the `items` array (or `null`, an empty list) to the channel.
struct ItemsSeed<'a> {
    items: &'a mpsc::Sender<Value>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            self.items
                .blocking_send(item)
                .map_err(|_| de::Error::custom("list reader abandoned"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `json` as a list page, returning what was streamed.
    fn decode(json: &str) -> (Result<PageEnd, String>, Vec<Value>) {
        let (sender, mut receiver) = mpsc::channel(16);
        let mut decoder = serde_json::Deserializer::from_str(json);
        let end = ListSeed { items: &sender }
            .deserialize(&mut decoder)
            .and_then(|end| decoder.end().map(|()| end))
            .map_err(|e| e.to_string());
        drop(sender);
        let mut items = Vec::new();
        while let Ok(item) = receiver.try_recv() {
            items.push(item);
        }
        (end, items)
    }

    #[test]
    fn pages_items_and_their_end() {
        let cases: [(&str, Result<PageEnd, String>, usize); 7] = [
            (
                r#"{"kind":"PodList","metadata":{"resourceVersion":"7","continue":"abc"},"items":[{"a":1},{"b":[2]}]}"#,
                Ok(PageEnd {
                    resource_version: "7".into(),
                    continue_token: Some("abc".into()),
                }),
                2,
            ),
            (
                r#"{"items":[{"a":1}],"metadata":{"resourceVersion":"8","continue":""},"extra":{"x":[1,2]}}"#,
                Ok(PageEnd {
                    resource_version: "8".into(),
                    continue_token: None,
                }),
                1,
            ),
            (
                r#"{"metadata":{"resourceVersion":"9"},"items":null}"#,
                Ok(PageEnd {
                    resource_version: "9".into(),
                    continue_token: None,
                }),
                0,
            ),
            (
                r#"{"items":[{"a":1}]}"#,
                Err("missing field `metadata` at line 1 column 19".into()),
                1,
            ),
            (
                r#"{"kind":"Status","metadata":{},"code":500}"#,
                Err("missing field `items` at line 1 column 42".into()),
                0,
            ),
            (
                r#"{"metadata":{"resourceVersion":"9"},"items":[{"a":1},{"b":"#,
                Err("EOF while parsing a value at line 1 column 58".into()),
                1,
            ),
            (
                r#"{"metadata":{},"items":{"a":1}}"#,
                Err("invalid type: map, expected an array of objects at line 1 column 24".into()),
                0,
            ),
        ];
        for (json, expected, streamed) in cases {
            let (end, items) = decode(json);
            assert_eq!((end, items.len()), (expected, streamed), "{json}");
        }
    }
}
