//! Our attachments, checked: stale filters of dead processes removed
//! before attaching (never those of a live one), and at every drain
//! whether ours are still in place — a `tc filter del`, another tool's
//! cleanup or a CNI replacing the clsact qdisc would otherwise leave us
//! blind while reporting ready.

use aya::programs::{SchedClassifier, TcAttachType};
use netgov_common::names;

use super::{AttachMode, Datapath, DatapathError, interface_exists, tc_owner};

/// What a check of the attachments found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Interfaces whose programs had gone and were attached again.
    pub restored: Vec<String>,
    /// Interfaces whose programs had gone and could not be attached again.
    pub missing: Vec<(String, DatapathError)>,
}

const OUR_PROGRAMS: [&str; 2] = [names::FROM_POD_PROGRAM, names::TO_POD_PROGRAM];

impl Datapath {
    /// Removes our programs' filters on `ifindex` whose owner is gone (a
    /// killed netgov); another live netgov's filters stay (logged).
    pub(super) fn remove_stale_filters(
        &self,
        ifindex: u32,
        interface: &str,
    ) -> Result<(), DatapathError> {
        let Some(owner) = self.owner.as_ref() else {
            return Ok(());
        };
        let failed = |source| DatapathError::Filters { ifindex, source };
        for filter in owner.our_filters(ifindex, &OUR_PROGRAMS).map_err(failed)? {
            if filter.handle == owner.handle() {
                continue;
            }
            if tc_owner::owner_alive(filter.handle) {
                tracing::warn!(
                    interface,
                    handle = format!("{:#x}", filter.handle),
                    "another running netgov has filters here; leaving them in place"
                );
                continue;
            }
            owner.delete(ifindex, filter).map_err(failed)?;
            tracing::info!(
                interface,
                handle = format!("{:#x}", filter.handle),
                "removed a stale filter a stopped netgov left"
            );
        }
        Ok(())
    }

    /// Checks that every attached interface still runs both programs, and
    /// attaches again where one is gone. Errors while looking are taken as
    /// "still attached" (no thrashing on a netlink hiccup).
    pub fn verify(&mut self) -> Verified {
        let mut verified = Verified::default();
        // Only the interfaces that lost a program are copied out; one that
        // vanished took its attachments with it (the link events detach it).
        let gone: Vec<(u32, String)> = self
            .attached()
            .filter(|(ifindex, name)| !self.still_attached(*ifindex, name))
            .filter(|(ifindex, _)| interface_exists(*ifindex))
            .map(|(ifindex, name)| (ifindex, name.to_owned()))
            .collect();
        for (ifindex, name) in gone {
            // Drop what is left of ours (one hook may remain), then again.
            let _ = self.detach(ifindex);
            match self.attach(ifindex, &name) {
                Ok(()) => verified.restored.push(name),
                Err(error) => verified.missing.push((name, error)),
            }
        }
        verified
    }

    fn still_attached(&self, ifindex: u32, name: &str) -> bool {
        match self.mode {
            AttachMode::Netlink => {
                let Some(owner) = self.owner.as_ref() else {
                    return true;
                };
                match owner.our_filters(ifindex, &OUR_PROGRAMS) {
                    Ok(filters) => [false, true].iter().all(|egress| {
                        filters
                            .iter()
                            .any(|f| f.egress == *egress && f.handle == owner.handle())
                    }),
                    Err(_) => true,
                }
            }
            _ => {
                let (from_pod, to_pod) = self.program_ids;
                [
                    (TcAttachType::Ingress, from_pod),
                    (TcAttachType::Egress, to_pod),
                ]
                .into_iter()
                .all(|(hook, id)| match SchedClassifier::query_tcx(name, hook) {
                    Ok((_, programs)) => programs.iter().any(|p| p.id() == id),
                    Err(_) => true,
                })
            }
        }
    }
}
