//! The PROXY protocol (HAProxy's, versions 1 and 2): a TCP load balancer in
//! front sends the client's address ahead of the connection's own bytes.
//! Read only from the peers `server.proxy_protocol` lists (they must send
//! it), never believed from anyone else. Parsing is the `ppp` crate's; this
//! module only reads exactly the header's bytes, none past it, so what
//! follows (a TLS handshake, an HTTP request) is untouched.

use std::net::SocketAddr;

use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The first 12 bytes of a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a version 2 header: signature, version and command,
/// family and protocol, length.
const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part: the
/// addresses take at most 216 (UNIX), the rest is TLVs nobody here reads.
const V2_MAX_PAYLOAD: usize = 1024;
/// The longest version 1 header, CRLF included (the spec's 107).
const V1_MAX: usize = 107;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): read at
/// once without reading into what follows.
const SHORTEST: usize = 15;

/// Why a connection's PROXY header was refused (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection did not start with a PROXY header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A header longer than the bound.
    #[error("the PROXY protocol header is too long")]
    TooLong,
    /// A header the parser refused.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The connection failed or closed while the header was read.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header at the start of `stream` and nothing after it.
/// `Some(client)` for a proxied TCP connection; `None` when the header
/// names no client (v2 `LOCAL`, as health checks send, `UNKNOWN`, UNIX
/// sockets): the peer itself is the client then.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; SHORTEST];
    stream.read_exact(&mut head).await?;
    if head[..12] == V2_SIGNATURE[..] {
        let mut fixed = [0u8; V2_FIXED];
        fixed[..SHORTEST].copy_from_slice(&head);
        stream.read_exact(&mut fixed[SHORTEST..]).await?;
        let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(ProxyHeaderError::TooLong);
        }
        let mut header = Vec::with_capacity(V2_FIXED + payload);
        header.extend_from_slice(&fixed);
        header.resize(V2_FIXED + payload, 0);
        stream.read_exact(&mut header[V2_FIXED..]).await?;
        return v2_client(&header);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut header = Vec::with_capacity(V1_MAX);
    header.extend_from_slice(&head);
    // Byte by byte: the header's end is only known by its CRLF, and
    // nothing after it may be consumed.
    while !header.ends_with(b"\r\n") {
        if header.len() >= V1_MAX {
            return Err(ProxyHeaderError::TooLong);
        }
        header.push(stream.read_u8().await?);
    }
    v1_client(&header)
}

fn v1_client(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let parsed =
        v1::Header::try_from(header).map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    Ok(match parsed.addresses {
        v1::Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Unknown => None,
    })
}

fn v2_client(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let parsed =
        v2::Header::try_from(header).map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    if parsed.command == v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        v2::Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a header from `input`; returns the address and what is left.
    async fn read_all(input: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut reader = input;
        let result = read(&mut reader).await;
        (result, reader.to_vec())
    }

    fn v2_header(command: u8, addresses: v2::Addresses) -> Vec<u8> {
        v2::Builder::with_addresses(0x20 | command, v2::Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn version_1_gives_the_source_and_leaves_what_follows() {
        let (client, rest) =
            read_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(client.unwrap(), Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let (client, rest) =
            read_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\r\n\x16\x03").await;
        assert_eq!(
            client.unwrap(),
            Some("[2001:db8::1]:51234".parse().unwrap())
        );
        assert_eq!(rest, b"\x16\x03");

        let (client, rest) = read_all(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn version_2_gives_the_source_and_local_is_the_peer() {
        let source: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let destination: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut input = v2_header(0x01, (source, destination).into());
        input.extend_from_slice(b"\x16\x03\x01");
        let (client, rest) = read_all(&input).await;
        assert_eq!(client.unwrap(), Some(source));
        assert_eq!(rest, b"\x16\x03\x01");

        let mut local = v2_header(0x00, v2::Addresses::Unspecified);
        local.extend_from_slice(b"GET");
        let (client, rest) = read_all(&local).await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn missing_malformed_and_long_headers_are_refused() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n",
            b"PROXY TCP9 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY",
        ] {
            assert!(read_all(input).await.0.is_err(), "{input:?}");
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(
            read_all(&long).await.0,
            Err(ProxyHeaderError::TooLong)
        ));

        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read_all(&huge).await.0,
            Err(ProxyHeaderError::TooLong)
        ));
    }
}
