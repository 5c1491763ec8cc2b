//! Pod interface discovery through rtnetlink: a dump of the links present at
//! start, then the kernel's link notifications, filtered by name globs.

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::mpsc;

/// Interface name globs that cover the host side of pod interfaces of
/// common CNIs: generic veth (bridge, flannel, kindnet), Calico, Cilium,
/// GKE, AWS VPC CNI, Azure CNI.
pub const DEFAULT_INTERFACE_GLOBS: &[&str] = &["veth*", "cali*", "lxc*", "gke*", "eni*", "azv*"];

/// Errors of interface discovery.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// A `--iface` glob does not parse.
    #[error("invalid interface glob `{glob}`: {source}")]
    Glob {
        /// The glob as given.
        glob: String,
        /// Why it does not parse.
        #[source]
        source: glob::PatternError,
    },
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink route socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The initial link dump failed.
    #[error("netlink link dump failed: {0}")]
    Dump(#[source] rtnetlink::Error),
    /// The notification stream ended (the socket closed or overran).
    #[error("netlink link notifications stopped")]
    NotificationsEnded,
}

/// Which interface names to attach to, compiled once.
#[derive(Clone, Debug)]
pub struct InterfaceFilter {
    patterns: Vec<glob::Pattern>,
}

impl InterfaceFilter {
    /// Compiles `globs` (`*`, `?`, `[...]`); an empty list means
    /// [`DEFAULT_INTERFACE_GLOBS`].
    ///
    /// # Errors
    /// [`InterfaceError::Glob`] naming the first glob that does not parse.
    ///
    /// # Examples
    /// ```
    /// use netgov_agent::capture::interfaces::InterfaceFilter;
    /// let filter = InterfaceFilter::new(&["cali*".to_string()]).unwrap();
    /// assert!(filter.matches("cali12ab"));
    /// assert!(!filter.matches("eth0"));
    /// ```
    pub fn new(globs: &[String]) -> Result<Self, InterfaceError> {
        let defaults: Vec<String>;
        let globs = if globs.is_empty() {
            defaults = DEFAULT_INTERFACE_GLOBS
                .iter()
                .map(|g| g.to_string())
                .collect();
            &defaults
        } else {
            globs
        };
        let patterns = globs
            .iter()
            .map(|glob| {
                glob::Pattern::new(glob).map_err(|source| InterfaceError::Glob {
                    glob: glob.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether `name` matches any glob.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

/// A change in the set of links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists (from the start-up dump, or created or changed since).
    Present {
        /// Interface index.
        index: u32,
        /// Interface name.
        name: String,
    },
    /// A link was deleted.
    Removed {
        /// Interface index.
        index: u32,
    },
    /// Every link present at start has been reported.
    DumpComplete,
}

fn link_event(message: &LinkMessage, present: bool) -> Option<LinkEvent> {
    let index = message.header.index;
    if !present {
        return Some(LinkEvent::Removed { index });
    }
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(LinkEvent::Present {
                index,
                name: name.clone(),
            }),
            _ => None,
        })
}

/// Sends every link present now, then every change, to `events`, until the
/// receiver is dropped. Subscribes before dumping so no link created in
/// between is missed (it may be reported twice; consumers are idempotent).
///
/// # Errors
/// [`InterfaceError::Socket`], [`InterfaceError::Dump`], or
/// [`InterfaceError::NotificationsEnded`] when the kernel stops talking.
pub async fn watch_links(events: mpsc::Sender<LinkEvent>) -> Result<(), InterfaceError> {
    let (connection, handle, mut notifications) =
        new_multicast_connection(&[MulticastGroup::Link]).map_err(InterfaceError::Socket)?;
    let connection = tokio::spawn(connection);
    let _abort_on_return = AbortOnDrop(connection);

    let mut dump = handle.link().get().execute();
    while let Some(message) = dump.try_next().await.map_err(InterfaceError::Dump)? {
        if let Some(event) = link_event(&message, true)
            && events.send(event).await.is_err()
        {
            return Ok(());
        }
    }
    if events.send(LinkEvent::DumpComplete).await.is_err() {
        return Ok(());
    }
    while let Some((message, _)) = notifications.next().await {
        let event = match &message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                link_event(link, true)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                link_event(link, false)
            }
            _ => None,
        };
        if let Some(event) = event
            && events.send(event).await.is_err()
        {
            return Ok(());
        }
    }
    Err(InterfaceError::NotificationsEnded)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
