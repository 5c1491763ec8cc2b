//! Answering a request: lists (streamed, paged unless served whole),
//! watches (history, then live events and bookmarks), port-forwards, and
//! the failures and delays a test asks for.

use super::*;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// A page of a list, streamed an item at a time: paginated like the real
/// server (`limit` items, then a `continue` token holding the offset) unless
/// the list is served whole.
fn list(
    store: &Mutex<Store>,
    resource: Resource,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let mut store = store.lock().expect("store");
    let version = query.get("resourceVersion").cloned().unwrap_or_default();
    let whole = store.ignore_limit || version == "0";
    store
        .list_versions
        .entry(resource)
        .or_default()
        .push(version);
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0 && !whole)
        .unwrap_or(usize::MAX);
    let mut items = store
        .objects
        .iter()
        .filter(|((r, _, _), object)| *r == resource && route::selects(namespace, query, object))
        .map(|(_, object)| Arc::clone(object))
        .skip(offset);
    let page: Vec<Arc<Value>> = items.by_ref().take(limit).collect();
    let more = items.next().is_some();
    let mut metadata = json!({"resourceVersion": store.resource_version.to_string()});
    if more {
        metadata["continue"] = json!((offset + page.len()).to_string());
    }
    let head = format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{metadata},\"items\":[",
        resource.api_version(),
        resource.kind()
    );
    let served = Arc::clone(&store.served);
    served.count(0, head.len() + 2);
    let items = page.into_iter().enumerate().map(move |(i, object)| {
        let separator = if i == 0 { "" } else { "," };
        let item = format!("{separator}{object}");
        served.count(1, item.len());
        Ok(Frame::data(Bytes::from(item)))
    });
    let chunks = std::iter::once(Ok(Frame::data(Bytes::from(head))))
        .chain(items)
        .chain(std::iter::once(Ok(Frame::data(Bytes::from_static(b"]}")))));
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
            chunks,
        ))))
        .expect("response")
}

pub(crate) async fn handle(
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<WatchEvent>,
    requests: Arc<Mutex<BTreeMap<(Resource, &'static str), u64>>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (delay, failing) = {
        let store = store.lock().expect("store");
        (store.delay, store.failing)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let query = route::query(request.uri().query());
    let (resource, namespace) = match Route::of(request.uri().path()) {
        Some(Route::Collection {
            resource,
            namespace,
        }) => (resource, namespace),
        Some(Route::PortForward { namespace, pod }) => {
            let exists = store.lock().expect("store").objects.contains_key(&(
                Resource::Pods,
                namespace.clone(),
                pod.clone(),
            ));
            if !exists {
                return Ok(full(
                    StatusCode::NOT_FOUND,
                    status(404, "NotFound", &format!("pods \"{pod}\" not found")),
                ));
            }
            let port = query
                .get("ports")
                .filter(|p| !p.contains(','))
                .and_then(|p| p.parse().ok());
            let network = store.lock().expect("store").pod_network.clone();
            return Ok(portforward::handle(request, port, network));
        }
        None => {
            return Ok(full(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "unknown path"),
            ));
        }
    };
    if let Some(code) = failing {
        let kind = if request.uri().query().unwrap_or_default().contains("watch=") {
            "watch"
        } else {
            "list"
        };
        *requests
            .lock()
            .expect("requests")
            .entry((resource, kind))
            .or_default() += 1;
        return Ok(full(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            status(code, "InternalError", "injected failure"),
        ));
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    *requests
        .lock()
        .expect("requests")
        .entry((resource, if watch { "watch" } else { "list" }))
        .or_default() += 1;
    if !watch {
        return Ok(list(&store, resource, namespace.as_deref(), &query));
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = matches!(
        query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290),
    );
    if store.lock().expect("store").stall_watches {
        let silence = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(silence))));
    }
    // Subscribe before reading history so nothing falls in between.
    let live = events.subscribe();
    let (backlog, expired, current) = {
        let store = store.lock().expect("store");
        let expired = from != 0 && from < store.compacted;
        let backlog: Vec<WatchEvent> = store
            .history
            .iter()
            .filter(|e| e.resource == resource && e.resource_version > from)
            .cloned()
            .collect();
        (backlog, expired, store.resource_version)
    };
    let served = Arc::clone(&store.lock().expect("store").served);
    let line = |event_type: &str, object: &Value| event_line(&served, event_type, object);
    if expired {
        let gone = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({current})"),
        );
        let body = StreamBody::new(futures::stream::iter([line("ERROR", &gone)]));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    let last_backlog = backlog.last().map_or(from, |e| e.resource_version);
    let backlog: Vec<_> = backlog.iter().map(|e| line(e.kind, &e.object)).collect();
    let backlog = futures::stream::iter(backlog);
    // The highest version the live stream has passed (sent or not this
    // resource's): a bookmark never claims more, or the client would resume
    // past events still queued.
    let passed = Arc::new(std::sync::atomic::AtomicU64::new(last_backlog.max(from)));
    let passed_live = Arc::clone(&passed);
    let (served_live, served_bookmarks) = (Arc::clone(&served), Arc::clone(&served));
    let live = tokio_stream::wrappers::BroadcastStream::new(live)
        // A receiver that lagged lost events: end the watch, so the client
        // watches again from its last version (served from history).
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(move |event| {
            let passed = Arc::clone(&passed_live);
            let served = Arc::clone(&served_live);
            async move {
                let event = event.ok()?;
                passed.fetch_max(event.resource_version, std::sync::atomic::Ordering::SeqCst);
                (event.resource == resource && event.resource_version > last_backlog)
                    .then(|| event_line(&served, event.kind, &event.object))
            }
        });
    let bookmark_stream = futures::stream::unfold((), move |()| {
        let passed = Arc::clone(&passed);
        let served = Arc::clone(&served_bookmarks);
        async move {
            if !bookmarks {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let version = passed.load(std::sync::atomic::Ordering::SeqCst);
            let bookmark = json!({"apiVersion": resource.api_version(), "kind": resource.kind(),
                                  "metadata": {"resourceVersion": version.to_string()}});
            Some((event_line(&served, "BOOKMARK", &bookmark), ()))
        }
    });
    let stream = backlog
        .chain(futures::stream::select(live, bookmark_stream))
        .take_until(tokio::time::sleep(timeout));
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response"))
}

/// A watch event's line, counted as served.
fn event_line(
    served: &Served,
    event_type: &str,
    object: &Value,
) -> Result<Frame<Bytes>, Infallible> {
    let line = format!("{}\n", json!({"type": event_type, "object": object}));
    served.count(u64::from(event_type != "BOOKMARK"), line.len());
    Ok(Frame::data(Bytes::from(line)))
}
