//! The client's address as the gateway counts it (rate limits, login
//! throttling, the audit): read once per request, into the context.

use std::net::IpAddr;

use http::HeaderMap;

use crate::proxy::headers::X_FORWARDED_FOR;

/// The client's address: the peer, unless the peer is a trusted proxy, in
/// which case `X-Forwarded-For` is walked from the right past trusted
/// proxies. Untrusted peers cannot choose the address they are counted as.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn client_address_honours_only_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 6.6.6.6, 10.0.0.7")]);
        let untrusted_peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_address(untrusted_peer, &xff, &trusted),
            untrusted_peer
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(proxy, &xff, &trusted),
            "6.6.6.6".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_address(proxy, &garbage, &trusted), proxy);
        assert_eq!(client_address(proxy, &xff, &[]), proxy);
    }
}
