//! How an audit is printed: sections of tables for people, JSON lines (one
//! object per finding, with its `kind`) for tools.

use std::io::Write;

use serde_json::json;

use super::AuditReport;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// Tables: rules and their use, over-broad ipBlocks, unprotected
    /// workloads.
    Table,
    /// A JSON object per rule and finding, one per line.
    Json,
}

/// Writes `report` to `out`.
///
/// # Errors
/// When writing fails.
pub fn render(
    report: &AuditReport,
    format: AuditFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        AuditFormat::Json => {
            for rule in &report.rules {
                let kind = if rule.flows == 0 {
                    "unused-rule"
                } else {
                    "rule"
                };
                writeln!(out, "{}", with_kind(kind, rule))?;
            }
            for block in &report.broad {
                writeln!(out, "{}", with_kind("broad-ip-block", block))?;
            }
            for workload in &report.unprotected {
                writeln!(out, "{}", with_kind("unprotected", workload))?;
            }
        }
        AuditFormat::Table => {
            let direction = |d: super::Direction| json!(d).as_str().unwrap_or("?").to_owned();
            table(
                out,
                "Rules and the recorded flows they admitted",
                &["POLICY", "DIRECTION", "RULE", "FLOWS"],
                report.rules.iter().map(|r| {
                    vec![
                        r.policy.clone(),
                        direction(r.direction),
                        format!("#{}", r.rule),
                        if r.flows == 0 {
                            "0 (unused)".to_owned()
                        } else {
                            r.flows.to_string()
                        },
                    ]
                }),
            )?;
            table(
                out,
                "ipBlocks much broader than the addresses that used them",
                &["POLICY", "DIRECTION", "RULE", "IPBLOCK", "USED BY"],
                report.broad.iter().map(|b| {
                    let used: Vec<String> = b.used_by.iter().map(ToString::to_string).collect();
                    vec![
                        b.policy.clone(),
                        direction(b.direction),
                        format!("#{}", b.rule),
                        b.cidr.clone(),
                        used.join(", "),
                    ]
                }),
            )?;
            table(
                out,
                "Workloads whose recorded traffic no policy isolated",
                &["WORKLOAD", "DIRECTION", "FLOWS"],
                report.unprotected.iter().map(|u| {
                    vec![
                        u.workload.clone(),
                        direction(u.direction),
                        u.flows.to_string(),
                    ]
                }),
            )?;
        }
    }
    out.flush()
}

fn with_kind(kind: &str, finding: &impl serde::Serialize) -> serde_json::Value {
    let mut value = json!(finding);
    value["kind"] = json!(kind);
    value
}

fn table(
    out: &mut impl Write,
    title: &str,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> std::io::Result<()> {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header);
    let mut empty = true;
    for row in rows {
        table.add_row(row);
        empty = false;
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    writeln!(out, "{title}:")?;
    if empty {
        writeln!(out, "  none")?;
    } else {
        for line in table.lines() {
            writeln!(out, "  {}", line.trim_end())?;
        }
    }
    writeln!(out)
}
