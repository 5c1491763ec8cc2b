use std::net::IpAddr;
use std::time::Duration;

use simple_dns::rdata::{A, AAAA, CNAME, RData, TXT};
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE};

use super::*;

fn host(text: &str) -> Hostname {
    Hostname::parse(text).expect("hostname")
}

fn record<'a>(owner: &'a str, ttl: u32, rdata: RData<'a>) -> ResourceRecord<'a> {
    ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, ttl, rdata)
}

fn a(address: &str) -> RData<'static> {
    let ip: std::net::Ipv4Addr = address.parse().expect("v4");
    RData::A(A::from(ip))
}

/// An answer to `question` (type A) with `answers`.
fn answer(question: &str, rcode: RCODE, answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
    let mut packet = Packet::new_reply(7);
    *packet.rcode_mut() = rcode;
    packet.questions.push(Question::new(
        Name::new_unchecked(question),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.answers = answers;
    packet.build_bytes_vec_compressed().expect("builds")
}

fn resolved(address: &str, names: &[&str], ttl: u64) -> Resolved {
    Resolved {
        address: address.parse::<IpAddr>().expect("ip"),
        names: names.iter().map(|n| host(n)).collect(),
        ttl: Duration::from_secs(ttl),
    }
}

#[test]
fn a_and_aaaa_records_of_the_question_are_its_addresses() {
    let v6: std::net::Ipv6Addr = "2001:db8::20".parse().expect("v6");
    let message = answer(
        "Upload.Example",
        RCODE::NoError,
        vec![
            record("upload.example", 300, a("203.0.113.20")),
            record("upload.example", 60, RData::AAAA(AAAA::from(v6))),
        ],
    );
    assert_eq!(
        parse_answer(&message),
        Ok(Answer::Addresses(vec![
            resolved("203.0.113.20", &["upload.example"], 300),
            resolved("2001:db8::20", &["upload.example"], 60),
        ]))
    );
}

#[test]
fn a_cname_chain_names_the_address_with_every_name_and_the_shortest_ttl() {
    let message = answer(
        "models.mirror.example",
        RCODE::NoError,
        vec![
            record(
                "models.mirror.example",
                600,
                RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example"))),
            ),
            record(
                "edge.cdn.example",
                120,
                RData::CNAME(CNAME(Name::new_unchecked("pop7.cdn.example"))),
            ),
            record("pop7.cdn.example", 900, a("198.51.100.7")),
        ],
    );
    assert_eq!(
        parse_answer(&message),
        Ok(Answer::Addresses(vec![resolved(
            "198.51.100.7",
            &[
                "models.mirror.example",
                "edge.cdn.example",
                "pop7.cdn.example"
            ],
            120
        )]))
    );
}

#[test]
fn records_off_the_chain_name_nothing() {
    // An answer slipping in an address for a name nobody asked about.
    let message = answer(
        "api.example",
        RCODE::NoError,
        vec![
            record("api.example", 60, a("192.0.2.1")),
            record("bank.example", 60, a("192.0.2.66")),
        ],
    );
    assert_eq!(
        parse_answer(&message),
        Ok(Answer::Addresses(vec![resolved(
            "192.0.2.1",
            &["api.example"],
            60
        )]))
    );
}

#[test]
fn a_cname_loop_ends() {
    let message = answer(
        "a.example",
        RCODE::NoError,
        vec![
            record(
                "a.example",
                60,
                RData::CNAME(CNAME(Name::new_unchecked("b.example"))),
            ),
            record(
                "b.example",
                60,
                RData::CNAME(CNAME(Name::new_unchecked("a.example"))),
            ),
        ],
    );
    assert_eq!(parse_answer(&message), Ok(Answer::NoAddress));
}

#[test]
fn nxdomain_no_data_and_other_types_name_nothing() {
    assert_eq!(
        parse_answer(&answer("gone.example", RCODE::NameError, vec![])),
        Ok(Answer::NoSuchName)
    );
    assert_eq!(
        parse_answer(&answer("empty.example", RCODE::NoError, vec![])),
        Ok(Answer::NoAddress)
    );
    assert_eq!(
        parse_answer(&answer("down.example", RCODE::ServerFailure, vec![])),
        Ok(Answer::NoAddress)
    );
    let txt = TXT::new().with_string("v=spf1").expect("txt");
    assert_eq!(
        parse_answer(&answer(
            "text.example",
            RCODE::NoError,
            vec![record("text.example", 60, RData::TXT(txt))]
        )),
        Ok(Answer::NoAddress)
    );
}

#[test]
fn broken_messages_are_errors_not_names() {
    let whole = answer(
        "upload.example",
        RCODE::NoError,
        vec![record("upload.example", 300, a("203.0.113.20"))],
    );
    for cut in [0, 5, 12, whole.len() - 1] {
        assert_eq!(
            parse_answer(&whole[..cut]),
            Err(DnsError::Truncated),
            "cut at {cut}"
        );
    }
    let mut query = Packet::new_query(1);
    query.questions.push(Question::new(
        Name::new_unchecked("upload.example"),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let query = query.build_bytes_vec().expect("builds");
    assert_eq!(parse_answer(&query), Err(DnsError::NotAnswer));
    // A label pointer pointing at itself.
    let mut looped = whole.clone();
    looped[12] = 0xC0;
    looped[13] = 12;
    assert!(matches!(
        parse_answer(&looped),
        Err(DnsError::Malformed | DnsError::Truncated)
    ));
    let bad_name = answer(
        "bad\u{7}name.example",
        RCODE::NoError,
        vec![record("bad\u{7}name.example", 60, a("192.0.2.1"))],
    );
    assert_eq!(parse_answer(&bad_name), Err(DnsError::BadName));
}

#[test]
fn tcp_segments_split_into_their_messages() {
    let one = answer(
        "a.example",
        RCODE::NoError,
        vec![record("a.example", 60, a("192.0.2.1"))],
    );
    let mut segment = Vec::new();
    for _ in 0..2 {
        segment.extend_from_slice(&(one.len() as u16).to_be_bytes());
        segment.extend_from_slice(&one);
    }
    segment.extend_from_slice(&[0, 200, 1, 2]);
    let messages: Vec<&[u8]> = tcp_messages(&segment).collect();
    assert_eq!(messages, vec![&one[..], &one[..], &[1u8, 2][..]]);
    assert_eq!(parse_answer(messages[2]), Err(DnsError::Truncated));
}

#[test]
fn hand_made_answers_fail_as_the_namespace_test_expects() {
    // The same bytes as the namespace test's bad resolver sends.
    let header = |answers: u16| {
        let mut h = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    let mut unknown_class = header(0);
    unknown_class.extend_from_slice(b"\x04junk\x07example\x00\x00\x01\x99\x99");
    assert_eq!(parse_answer(&unknown_class), Err(DnsError::Malformed));
    let mut cut = header(1);
    cut.extend_from_slice(b"\x03cut\x07example\x00\x00\x01\x00\x01");
    cut.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\xf4");
    assert_eq!(parse_answer(&cut), Err(DnsError::Truncated));
    let mut spaced = header(0);
    spaced.extend_from_slice(b"\x04ju k\x07example\x00\x00\x01\x00\x01");
    assert_eq!(parse_answer(&spaced), Err(DnsError::BadName));
}
