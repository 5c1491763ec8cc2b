use super::*;

/// A ClientHello record carrying `extensions` (type, body) in order.
fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut extension_bytes = Vec::new();
    for (kind, body) in extensions {
        extension_bytes.extend_from_slice(&kind.to_be_bytes());
        extension_bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        extension_bytes.extend_from_slice(body);
    }
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(32);
    hello.extend_from_slice(&[0x17; 32]); // session id
    hello.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    hello.extend_from_slice(&[1, 0]); // compression
    hello.extend_from_slice(&(extension_bytes.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extension_bytes);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn server_name_extension(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name);
    let mut body = (entry.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&entry);
    (0, body)
}

fn supported_groups() -> (u16, Vec<u8>) {
    (10, vec![0, 4, 0, 0x1d, 0, 0x17])
}

#[test]
fn the_server_name_is_read_wherever_it_is() {
    for extensions in [
        vec![
            server_name_extension(b"Api.Model-Hub.example"),
            supported_groups(),
        ],
        vec![
            supported_groups(),
            server_name_extension(b"api.model-hub.example"),
        ],
    ] {
        assert_eq!(
            server_name(&client_hello(&extensions)),
            Ok(Hostname::parse("api.model-hub.example").expect("hostname"))
        );
    }
}

#[test]
fn no_server_name_is_said_so() {
    assert_eq!(
        server_name(&client_hello(&[supported_groups()])),
        Err(SniError::NoName)
    );
}

#[test]
fn a_cut_hello_is_truncated_unless_the_name_came_first() {
    let late = client_hello(&[
        (21, vec![0; 300]), // padding before the name
        server_name_extension(b"upload.example"),
    ]);
    for cut in [3, 20, 100, late.len() - 5] {
        assert_eq!(
            server_name(&late[..cut]),
            Err(SniError::Truncated),
            "cut at {cut}"
        );
    }
    let early = client_hello(&[server_name_extension(b"upload.example"), (21, vec![0; 300])]);
    assert_eq!(
        server_name(&early[..early.len() - 100]),
        Ok(Hostname::parse("upload.example").expect("hostname"))
    );
}

#[test]
fn hostile_hellos_are_refused() {
    let mut not_handshake = client_hello(&[server_name_extension(b"a.example")]);
    not_handshake[0] = 23;
    assert_eq!(server_name(&not_handshake), Err(SniError::Malformed));
    let mut server_hello = client_hello(&[server_name_extension(b"a.example")]);
    server_hello[5] = 2;
    assert_eq!(server_name(&server_hello), Err(SniError::Malformed));
    for name in [&b"bad name.example"[..], b"\xff\xfe.example", b"", b"a..b"] {
        assert_eq!(
            server_name(&client_hello(&[server_name_extension(name)])),
            Err(SniError::BadName),
            "{name:?}"
        );
    }
    // An extension longer than the (complete) extensions block, and an
    // empty server_name extension.
    let mut overlong = client_hello(&[supported_groups()]);
    let at = overlong.len() - 7; // the last extension's length, low byte
    overlong[at] = 40;
    assert_eq!(server_name(&overlong), Err(SniError::Malformed));
    assert_eq!(
        server_name(&client_hello(&[(0, vec![])])),
        Err(SniError::Malformed)
    );
    // A server name list longer than its extension.
    let (_, mut body) = server_name_extension(b"a.example");
    body[1] += 40;
    assert_eq!(
        server_name(&client_hello(&[(0, body)])),
        Err(SniError::Malformed)
    );
    // Random bytes never panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2_000 {
        let mut bytes = client_hello(&[server_name_extension(b"a.example")]);
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
        }
        let _ = server_name(&bytes);
    }
}
