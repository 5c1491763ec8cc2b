//! A DNS server for a namespace: dnsmasq answering only for its own
//! records (no upstream, no hosts file, no configuration file), in the
//! foreground, for the tests and the demo.

use std::process::Command;

/// A `dnsmasq` command in `netns` that listens on `address` and answers
/// for names under `.example` only from `records` (dnsmasq options such as
/// `--host-record=NAME,ADDRESS` or `--cname=ALIAS,TARGET`); any other name
/// there is NXDOMAIN.
pub fn dnsmasq(netns: &crate::Netns, address: &str, records: &[String]) -> Command {
    let mut command = netns.command("dnsmasq");
    command
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--local=/example/",
        ])
        .arg(format!("--listen-address={address}"))
        .args(records);
    command
}
