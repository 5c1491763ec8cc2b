//! How a replay is printed: a table for people, JSON lines for tools.

use std::io::Write;

use super::ReplayReport;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// A row per workload pair, protocol and port that would change.
    Table,
    /// A JSON object per such group, one per line.
    Json,
}

const HEADER: [&str; 8] = [
    "CHANGE",
    "SOURCE",
    "DESTINATION",
    "PORT",
    "FLOWS",
    "FIRST SEEN",
    "LAST SEEN",
    "BECAUSE",
];

/// Writes the changes of `report` to `out`.
///
/// # Errors
/// When writing fails.
pub fn render(
    report: &ReplayReport,
    format: ReplayFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        ReplayFormat::Json => {
            for change in &report.changes {
                serde_json::to_writer(&mut *out, change)?;
                writeln!(out)?;
            }
        }
        ReplayFormat::Table => {
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
                .set_header(HEADER);
            for c in &report.changes {
                let change = serde_json::to_value(c.change).unwrap_or_default();
                table.add_row([
                    change.as_str().unwrap_or("?").to_owned(),
                    c.src.clone(),
                    c.dst.clone(),
                    format!("{}/{}", c.port, c.protocol),
                    c.flows.to_string(),
                    c.first_seen.to_string(),
                    c.last_seen.to_string(),
                    c.because.clone(),
                ]);
            }
            for column in table.column_iter_mut() {
                column.set_padding((0, 2));
            }
            for line in table.lines() {
                writeln!(out, "{}", line.trim_end())?;
            }
        }
    }
    out.flush()
}
