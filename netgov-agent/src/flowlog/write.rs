//! Writing the flow log, for log shippers and later replay.
//!
//! Decisions:
//! - A file is opened for appending, never truncated: a restarted agent
//!   keeps what the previous one wrote.
//! - `-` writes to standard output, for a log shipper that reads the
//!   container's output (Fluent Bit, Vector, an OpenTelemetry collector).
//! - With a size limit, a file that would grow past it is renamed to
//!   `<path>.1` (replacing an older one) and a new file is started: at
//!   most twice the limit on disk.
//! - A line that cannot be written is counted
//!   (`netgov_flow_log_errors_total`) and logged, and the agent goes on;
//!   the next line tries again (reopening a rotated file if needed).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::FORMAT;
use crate::capture::record::FlowRecord;
use crate::engine::Decision;
use crate::engine::verdict::SideVerdict;
use crate::judge::context::EndContext;
use crate::judge::{DeniedBy, Enforcement, Judgement, ServiceRef};
use crate::model::Identity;
use crate::names::DestinationName;

/// Where the flow log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to; rotated past `max_bytes` when set.
    File {
        /// The file.
        path: PathBuf,
        /// Size past which the file is rotated to `<path>.1`.
        max_bytes: Option<u64>,
    },
}

/// A flow log that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("flow log {path}: {source}")]
pub struct FlowLogError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// One flow-log line: the capture record, both identities, the verdict
/// with both sides' explanations, enforcement and unexpected egress, and
/// the pod ends' contexts.
#[derive(Serialize)]
pub struct FlowEntry<'a> {
    format: u32,
    #[serde(flatten)]
    record: &'a FlowRecord,
    src_identity: &'a Identity,
    dst_identity: &'a Identity,
    verdict: Decision,
    egress: &'a SideVerdict,
    ingress: &'a SideVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied_by: Option<DeniedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcement: Option<Enforcement>,
    unexpected_egress: bool,
    /// The destination's names and how each was learned (`dns`, `sni`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dst_names: &'a [DestinationName],
    /// The port the verdict applies to (a Service flow's backend port).
    judged_dst_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a ServiceRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    staged_verdict: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_context: Option<&'a EndContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_context: Option<&'a EndContext>,
}

impl<'a> FlowEntry<'a> {
    /// The entry of a judged record.
    pub fn new(record: &'a FlowRecord, judgement: &'a Judgement) -> Self {
        Self {
            format: FORMAT,
            record,
            src_identity: &judgement.src,
            dst_identity: &judgement.dst,
            verdict: judgement.verdict.verdict,
            egress: &judgement.verdict.egress,
            ingress: &judgement.verdict.ingress,
            denied_by: judgement.denied_by,
            enforcement: judgement.enforcement,
            unexpected_egress: judgement.unexpected_egress,
            dst_names: &judgement.dst_names,
            judged_dst_port: judgement.dst_port,
            service: judgement.service.as_ref(),
            staged_verdict: judgement.staged_verdict,
            src_context: judgement.src_context.as_deref(),
            dst_context: judgement.dst_context.as_deref(),
        }
    }
}

/// An open flow log.
pub struct FlowLog {
    target: FlowLogTarget,
    /// The open file (`None` after a failed reopen; retried per line).
    file: Option<File>,
    /// Bytes in the current file.
    written: u64,
}

impl FlowLog {
    /// Opens `target` (a file is created if missing, appended to if not).
    ///
    /// # Errors
    /// [`FlowLogError`] when the file cannot be opened.
    pub fn open(target: FlowLogTarget) -> Result<Self, FlowLogError> {
        let (file, written) = match &target {
            FlowLogTarget::Stdout => (None, 0),
            FlowLogTarget::File { path, .. } => {
                let file = open_append(path).map_err(|source| FlowLogError {
                    path: path.clone(),
                    source,
                })?;
                let written = file.metadata().map_or(0, |m| m.len());
                (Some(file), written)
            }
        };
        Ok(Self {
            target,
            file,
            written,
        })
    }

    /// Writes one line.
    ///
    /// # Errors
    /// The write (or rotation) error; the caller counts it.
    pub fn write(&mut self, entry: &FlowEntry<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let (path, max_bytes) = match &self.target {
            FlowLogTarget::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                return out.flush();
            }
            FlowLogTarget::File { path, max_bytes } => (path.clone(), *max_bytes),
        };
        if let Some(max) = max_bytes
            && self.written > 0
            && self.written + line.len() as u64 > max
        {
            self.file = None;
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&path, rotated)?;
            self.written = 0;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_append(&path)?;
                self.written = file.metadata().map_or(0, |m| m.len());
                self.file.insert(file)
            }
        };
        file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support::judged;

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn appends_across_restarts_and_rotates_past_the_limit() {
        let dir = std::env::temp_dir().join(format!("netgov-flow-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("flows.jsonl");
        let (record, judgement) = judged(Identity::world(), Identity::world());
        let entry = FlowEntry::new(&record, &judgement);
        let line_len = serde_json::to_vec(&entry).expect("json").len() as u64 + 1;
        for _ in 0..2 {
            let mut log = FlowLog::open(FlowLogTarget::File {
                path: path.clone(),
                max_bytes: None,
            })
            .expect("open");
            log.write(&entry).expect("write");
        }
        assert_eq!(lines(&path), 2, "a second agent appends");
        let mut log = FlowLog::open(FlowLogTarget::File {
            path: path.clone(),
            max_bytes: Some(3 * line_len),
        })
        .expect("open");
        for _ in 0..2 {
            log.write(&entry).expect("write");
        }
        let rotated = dir.join("flows.jsonl.1");
        assert_eq!((lines(&path), lines(&rotated)), (1, 3));
        let value: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim())
                .expect("one JSON line");
        assert_eq!(value["verdict"], "allow");
        assert_eq!(value["src_identity"]["workload"], "world");
        assert_eq!(value["protocol"], "TCP");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_write_error_is_returned_not_swallowed() {
        // /dev/full opens, and every write to it fails with ENOSPC.
        let mut log = FlowLog::open(FlowLogTarget::File {
            path: PathBuf::from("/dev/full"),
            max_bytes: None,
        })
        .expect("open /dev/full");
        let (record, judgement) = judged(Identity::world(), Identity::world());
        assert!(log.write(&FlowEntry::new(&record, &judgement)).is_err());
    }
}
