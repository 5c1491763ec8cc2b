//! The server name a TLS ClientHello asks for (RFC 8446 §4.1.2, RFC 6066
//! §3), read from the start of the client's first segment.

use super::Hostname;

/// Why a ClientHello gave no name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The bytes end before the server name does (a ClientHello longer than
    /// the first segment, or than the kernel copies, with the name late).
    #[error("truncated ClientHello")]
    Truncated,
    /// Lengths that do not fit, or not a ClientHello.
    #[error("malformed ClientHello")]
    Malformed,
    /// No server_name extension (a connection to an address, or an
    /// encrypted ClientHello's outer name only).
    #[error("ClientHello without a server name")]
    NoName,
    /// A server name that is not a hostname.
    #[error("server name that is not a hostname")]
    BadName,
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// A cursor that reports running out of bytes as [`SniError::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SniError> {
        if self.0.len() < n {
            return Err(SniError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SniError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SniError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Skips a vector with a length prefix of `width` bytes.
    fn skip_vector(&mut self, width: usize) -> Result<(), SniError> {
        let length = self
            .take(width)?
            .iter()
            .fold(0usize, |n, byte| n << 8 | usize::from(*byte));
        self.take(length).map(|_| ())
    }
}

/// The server name of the ClientHello `data` starts with.
///
/// # Errors
/// [`SniError`] when there is none, or it cannot be read.
pub fn server_name(data: &[u8]) -> Result<Hostname, SniError> {
    let mut record = Reader(data);
    if record.u8()? != HANDSHAKE {
        return Err(SniError::Malformed);
    }
    record.take(2)?; // legacy record version
    let record_length = usize::from(record.u16()?);
    // The record may continue in later segments: read what is here.
    let body = &record.0[..record.0.len().min(record_length)];
    let mut hello = Reader(body);
    if hello.u8()? != CLIENT_HELLO {
        return Err(SniError::Malformed);
    }
    hello.take(3)?; // handshake length
    hello.take(2 + 32)?; // legacy version, random
    hello.skip_vector(1)?; // session id
    hello.skip_vector(2)?; // cipher suites
    hello.skip_vector(1)?; // compression methods
    let extensions_length = usize::from(hello.u16()?);
    let mut extensions = Reader(&hello.0[..hello.0.len().min(extensions_length)]);
    // With every extension here, running out of bytes is a lie in a
    // length, not a cut.
    let complete = hello.0.len() >= extensions_length;
    let cut = |error: SniError| match (error, complete) {
        (SniError::Truncated, true) => SniError::Malformed,
        (error, _) => error,
    };
    while !extensions.0.is_empty() {
        let kind = extensions.u16().map_err(cut)?;
        let length = usize::from(extensions.u16().map_err(cut)?);
        let body = extensions.take(length).map_err(cut)?;
        if kind == SERVER_NAME {
            return host_name(body);
        }
    }
    if complete {
        Err(SniError::NoName)
    } else {
        Err(SniError::Truncated)
    }
}

fn host_name(extension: &[u8]) -> Result<Hostname, SniError> {
    let mut list = Reader(extension);
    // Whole (the extension was taken in full): short means malformed.
    let list_length = usize::from(list.u16().map_err(|_| SniError::Malformed)?);
    let mut names = Reader(list.take(list_length).map_err(|_| SniError::Malformed)?);
    while !names.0.is_empty() {
        let kind = names.u8().map_err(|_| SniError::Malformed)?;
        let length = usize::from(names.u16().map_err(|_| SniError::Malformed)?);
        let name = names.take(length).map_err(|_| SniError::Malformed)?;
        if kind == HOST_NAME {
            let text = std::str::from_utf8(name).map_err(|_| SniError::BadName)?;
            return Hostname::parse(text).ok_or(SniError::BadName);
        }
    }
    Err(SniError::NoName)
}

#[cfg(test)]
mod tests;
