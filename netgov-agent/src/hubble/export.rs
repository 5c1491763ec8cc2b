//! The Hubble export file (`--hubble-export-file-path`): every event of
//! the ring as one line of Hubble's export format,
//! `{"flow":{...},"node_name":"...","time":"..."}` (protojson with proto
//! field names, as Cilium writes it), for log pipelines and the tools that
//! read Hubble's JSON (`hubble observe --input-file`,
//! hubble-audit2policy).
//!
//! Decisions:
//! - The writer follows the ring like any client, on a thread of its own:
//!   neither the judge stage nor the runtime's workers wait on the disk. A
//!   writer a whole ring behind writes a `lost_events` line and reports
//!   the events ([`Trouble::ExportLost`]).
//! - Sizes in MiB, as Cilium's flag means them.
//! - Appended, never truncated. Past `max_size_bytes` the file is renamed
//!   `<path>.1` (older backups move up to `<path>.N`, the oldest past
//!   `max_backups` removed) and a new one is started; with no backups the
//!   file is simply started again.
//! - A line that cannot be written is counted
//!   (`netgov_hubble_export_errors_total`), the first of a run of failures
//!   logged, and the next line tries again (reopening the file).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::convert::timestamp;
use super::proto::flow::{LostEvent, LostEventSource};
use super::proto::observer::{ExportEvent, export_event::ResponseTypes};
use super::ring::EventRing;
use super::{Report, Trouble};
use crate::capture::clock::unix_now_nanos;

/// Cilium's defaults: 10 MiB a file, 5 backups.
pub const DEFAULT_MAX_SIZE_MB: u64 = 10;
/// See [`DEFAULT_MAX_SIZE_MB`].
pub const DEFAULT_MAX_BACKUPS: usize = 5;

/// Where and how the export is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The file.
    pub path: PathBuf,
    /// Size past which it is rotated.
    pub max_size_bytes: u64,
    /// Rotated files kept.
    pub max_backups: usize,
}

/// An export file that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("Hubble export file {path}: {source}")]
pub struct ExportError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The open export file.
pub struct ExportFile {
    options: ExportOptions,
    file: Option<File>,
    written: u64,
}

impl ExportFile {
    /// Opens (creates or appends to) the file.
    ///
    /// # Errors
    /// [`ExportError`] when it cannot be opened.
    pub fn open(options: ExportOptions) -> Result<Self, ExportError> {
        let file = open_append(&options.path).map_err(|source| ExportError {
            path: options.path.clone(),
            source,
        })?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            options,
            file: Some(file),
            written,
        })
    }

    /// Writes one event as a line.
    ///
    /// # Errors
    /// The write or rotation error; the caller counts it.
    pub fn write(&mut self, event: &ExportEvent) -> io::Result<()> {
        let mut value = serde_json::to_value(event).map_err(io::Error::other)?;
        // protojson writes UTC as `Z`; pbjson writes `+00:00`.
        z_normalize(&mut value["time"]);
        z_normalize(&mut value["flow"]["time"]);
        let mut line = serde_json::to_vec(&value).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.written > 0 && self.written + line.len() as u64 > self.options.max_size_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_append(&self.options.path)?;
                self.written = file.metadata().map_or(0, |m| m.len());
                self.file.insert(file)
            }
        };
        file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        self.written = 0;
        let path = &self.options.path;
        let backup = |n: usize| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.options.max_backups == 0 {
            return std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(backup(self.options.max_backups));
        for n in (1..self.options.max_backups).rev() {
            match std::fs::rename(backup(n), backup(n + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::rename(path, backup(1))
    }
}

/// A UTC timestamp as protojson writes it: `...Z`, not `...+00:00`.
fn z_normalize(time: &mut serde_json::Value) {
    if let Some(text) = time.as_str()
        && let Some(utc) = text.strip_suffix("+00:00")
    {
        *time = serde_json::Value::String(format!("{utc}Z"));
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes every event of `ring` from sequence number `from` on to `file`,
/// until the process ends, on a thread of its own (writes block);
/// `runtime` is the runtime whose ring it waits on.
///
/// # Errors
/// The thread cannot be started.
pub fn export_forever(
    ring: Arc<EventRing>,
    (file, from): (ExportFile, u64),
    node_name: String,
    report: Report,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hubble-export".into())
        .spawn(move || runtime.block_on(export(ring, (file, from), node_name, report)))
}

async fn export(
    ring: Arc<EventRing>,
    (mut file, from): (ExportFile, u64),
    node_name: String,
    report: Report,
) {
    let mut cursor = from;
    let mut failing = false;
    loop {
        ring.wait_past(cursor).await;
        let batch = ring.read_from(cursor);
        cursor = batch.next;
        let mut events = Vec::with_capacity(batch.events.len() + 1);
        if batch.lost > 0 {
            report(Trouble::ExportLost(batch.lost));
            events.push(ExportEvent {
                response_types: Some(ResponseTypes::LostEvents(LostEvent {
                    source: LostEventSource::HubbleRingBuffer.into(),
                    num_events_lost: batch.lost,
                    ..LostEvent::default()
                })),
                node_name: node_name.clone(),
                time: Some(timestamp(unix_now_nanos())),
            });
        }
        events.extend(batch.events.iter().map(|flow| ExportEvent {
            time: flow.time,
            response_types: Some(ResponseTypes::Flow((**flow).clone())),
            node_name: node_name.clone(),
        }));
        for event in &events {
            match file.write(event) {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("Hubble export: writing again");
                    }
                }
                Err(error) => {
                    report(Trouble::ExportWriteFailed);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(%error, path = %file.options.path.display(),
                            "Hubble export: lines not written (counted in netgov_hubble_export_errors_total)");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubble::filter::test_flow::flow;

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn a_line_is_hubbles_export_format() {
        let dir = tempdir("format");
        let path = dir.join("events.json");
        let mut file = ExportFile::open(ExportOptions {
            path: path.clone(),
            max_size_bytes: 1 << 20,
            max_backups: 1,
        })
        .expect("open");
        let mut flow = flow();
        flow.time = Some(timestamp(1_767_225_600_123_000_000));
        file.write(&ExportEvent {
            time: flow.time,
            response_types: Some(ResponseTypes::Flow(flow)),
            node_name: "node-a".into(),
        })
        .expect("write");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim())
                .expect("JSON");
        assert_eq!(line["node_name"], "node-a");
        assert_eq!(line["time"], "2026-01-01T00:00:00.123Z");
        assert_eq!(line["flow"]["verdict"], "AUDIT");
        assert_eq!(line["flow"]["Type"], "L3_L4");
        assert_eq!(line["flow"]["IP"]["ipVersion"], "IPv4");
        assert_eq!(line["flow"]["l4"]["TCP"]["destination_port"], 80);
        assert_eq!(line["flow"]["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(line["flow"]["source"]["pod_name"], "a-1");
        assert_eq!(line["flow"]["traffic_direction"], "INGRESS");
        assert_eq!(line["flow"]["is_reply"], false);
        assert_eq!(line["flow"]["event_type"]["type"], 5);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn rotates_past_the_size_keeping_the_backups_asked_for() {
        let dir = tempdir("rotate");
        let path = dir.join("events.json");
        let event = ExportEvent {
            time: None,
            response_types: Some(ResponseTypes::Flow(flow())),
            node_name: "node-a".into(),
        };
        let line = {
            let mut file = ExportFile::open(ExportOptions {
                path: dir.join("measure.json"),
                max_size_bytes: u64::MAX,
                max_backups: 0,
            })
            .expect("open");
            file.write(&event).expect("write");
            file.written
        };
        let mut file = ExportFile::open(ExportOptions {
            path: path.clone(),
            max_size_bytes: 2 * line,
            max_backups: 2,
        })
        .expect("open");
        for _ in 0..7 {
            file.write(&event).expect("write");
        }
        let backup = |n: u32| dir.join(format!("events.json.{n}"));
        assert_eq!(
            (
                lines(&path),
                lines(&backup(1)),
                lines(&backup(2)),
                backup(3).exists()
            ),
            (1, 2, 2, false)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "netgov-hubble-export-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
