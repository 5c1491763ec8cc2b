//! `cargo xtask bench agent --names`: the agent with destination names on.
//! The receiver pod is left out of the cluster state, so every flow to it
//! is egress to outside the cluster, which the agent names; a "resolver"
//! (the receiver, from port 53) first tells every sender pod that the
//! receiver's address is `upload.bench.example`, so each new flow is
//! judged with a name looked up. Before the steps, DNS answers are sent as
//! fast as one core builds them, each naming another address, to measure
//! how many the agent parses per second of its CPU.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netgov_testbed::Testbed;
use netgov_testbed::metrics_text::sum_samples as sum;

use crate::XtaskError;

/// The name every sender learns for the receiver.
pub const RECEIVER_NAME: &str = "upload.bench.example";
/// The port the senders' answers go to (dropped by their firewall).
const CLIENT_PORT: u16 = 5353;

/// A DNS answer to `name` (type A) with one address, TTL an hour.
fn answer(id: u16, name: &str, address: Ipv4Addr) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    // Response, recursion desired and available; one question, one answer.
    message.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    // The answer's owner: a pointer to the question's name.
    message.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    message.extend_from_slice(&3600u32.to_be_bytes());
    message.extend_from_slice(&[0, 4]);
    message.extend_from_slice(&address.octets());
    message
}

/// Every sender asks the receiver (a query from its port 5353 to port 53):
/// the datapath reads only answers on a flow the pod asked on.
fn ask(testbed: &Testbed) -> Result<(), XtaskError> {
    let pods = testbed.pods();
    let (senders, receiver) = pods.split_at(pods.len() - 1);
    let resolver = SocketAddr::new(receiver[0].ipv4.into(), 53);
    for pod in senders {
        let sent = pod.netns.run_in(move || -> std::io::Result<()> {
            let socket = UdpSocket::bind(("0.0.0.0", CLIENT_PORT))?;
            let mut query = answer(1, RECEIVER_NAME, Ipv4Addr::UNSPECIFIED);
            // A query: no answer section, only recursion desired.
            query[2] = 0x01;
            query[3] = 0;
            query[7] = 0;
            query.truncate(12 + RECEIVER_NAME.len() + 2 + 4);
            socket.send_to(&query, resolver).map(drop)
        })?;
        sent.map_err(|source| XtaskError::Io {
            what: format!("asking the resolver from {}", pod.name),
            source,
        })?;
    }
    // The queries reach the flow map before the answers come back.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// Sends `count` answers from the receiver's port 53 to the senders in
/// turn (each asked first), as fast as it can; answer `i` names `name_of(i)`. Returns how long
/// sending took.
fn send_answers(
    testbed: &Testbed,
    count: usize,
    name_of: &(dyn Fn(usize) -> (String, Ipv4Addr) + Sync),
) -> Result<Duration, XtaskError> {
    let pods = testbed.pods();
    let (senders, receiver) = pods.split_at(pods.len() - 1);
    let targets: Vec<SocketAddr> = senders
        .iter()
        .map(|p| SocketAddr::new(p.ipv4.into(), CLIENT_PORT))
        .collect();
    let address = receiver[0].ipv4;
    ask(testbed)?;
    let elapsed = receiver[0]
        .netns
        .run_in(move || -> std::io::Result<Duration> {
            let socket = UdpSocket::bind((address, 53))?;
            let started = Instant::now();
            for i in 0..count {
                let (name, named) = name_of(i);
                let target = targets[i % targets.len()];
                socket.send_to(&answer(i as u16, &name, named), target)?;
            }
            Ok(started.elapsed())
        })?;
    elapsed.map_err(|source| XtaskError::Io {
        what: "sending DNS answers".into(),
        source,
    })
}

/// Tells every sender that the receiver is [`RECEIVER_NAME`], and waits
/// until the agent has read the answers.
///
/// # Errors
/// When the answers cannot be sent or the agent does not read them.
pub fn name_the_receiver(
    testbed: &Testbed,
    scrape: &dyn Fn() -> Result<String, XtaskError>,
) -> Result<(), XtaskError> {
    let pods = testbed.pods();
    let receiver = pods[pods.len() - 1].ipv4;
    let senders = pods.len() - 1;
    let before = sum(&scrape()?, "netgov_dns_answers_total", &[]);
    send_answers(testbed, senders, &|_| (RECEIVER_NAME.to_owned(), receiver))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sum(&scrape()?, "netgov_dns_answers_total", &[]) < before + senders as f64 {
        if Instant::now() > deadline {
            return Err(XtaskError::Output {
                tool: "netgov agent",
                detail: "the senders' DNS answers were not read".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Flows judged with the receiver's name (of `flows` sent).
pub fn named_flows(text: &str) -> f64 {
    sum(
        text,
        "netgov_egress_flows_total",
        &[("destination", RECEIVER_NAME)],
    )
}

/// Sends `count` DNS answers, each a new name for an address of
/// 198.18.0.0/15 in turn, and prints how many the agent parsed, per
/// second of its CPU, and what was lost.
///
/// # Errors
/// When the answers cannot be sent or the agent not scraped.
pub fn answers_per_core(
    testbed: &Testbed,
    count: usize,
    scrape: &dyn Fn() -> Result<String, XtaskError>,
    agent_cpu: &dyn Fn() -> f64,
) -> Result<(), XtaskError> {
    let cpu_before = agent_cpu();
    let sent_in = send_answers(testbed, count, &|i| {
        // Addresses of the benchmarking range 198.18.0.0/15.
        let address = Ipv4Addr::from(0xC612_0000 | (i as u32 & 0x1_FFFF));
        (format!("h{i}.names.bench.example"), address)
    })?;
    // Until the count stops growing.
    let mut last = -1.0;
    let mut text = scrape()?;
    loop {
        let parsed = sum(&text, "netgov_dns_answers_total", &[]);
        if parsed == last {
            break;
        }
        last = parsed;
        std::thread::sleep(Duration::from_millis(1000));
        text = scrape()?;
    }
    let cpu = agent_cpu() - cpu_before;
    let parsed = sum(&text, "netgov_dns_answers_total", &[]);
    let dropped = sum(
        &text,
        "netgov_events_lost_total",
        &[("stage", "kernel_payloads")],
    );
    println!(
        "  DNS answers: {count} sent in {:.2} s ({:.0}/s offered); {parsed:.0} parsed, {dropped:.0} lost in the payload ring; agent CPU {cpu:.2} s: {:.0} answers/s per core; name cache {:.0} entries, {:.0} evicted",
        sent_in.as_secs_f64(),
        count as f64 / sent_in.as_secs_f64(),
        parsed / cpu.max(1e-9),
        sum(&text, "netgov_name_cache_entries", &[]),
        sum(&text, "netgov_name_cache_evictions_total", &[]),
    );
    Ok(())
}
