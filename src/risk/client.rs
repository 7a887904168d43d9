//! The client address of a request, and the subnet it is throttled by.
//!
//! The TCP peer is the client unless it is one of the configured trusted proxies
//! (`OMAMORI_TRUSTED_PROXIES`); only then is `X-Forwarded-For` believed, and only as far as the chain
//! of trusted hops goes: the right-most untrusted entry is the client. Everything to its left was
//! written by the client itself and may be forged, so it is never used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Where a request comes from (the client address behind trusted proxies) and its country.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub ip_text: String,
    pub subnet: String,
    pub country: Option<String>,
}

impl ClientInfo {
    /// The client of a request that reached us from `peer` with these headers.
    pub fn of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet], geo: &crate::ports::geo::GeoIp) -> ClientInfo {
        let ip = client_ip(peer, headers, trusted);
        ClientInfo { ip, ip_text: ip.to_string(), subnet: subnet_key(ip), country: geo.country(ip) }
    }
}

/// Refuses a shopper whose country is not allowed (`403 region_blocked`); the decision is logged and
/// counted.
pub fn country_policy(config: &crate::config::Config, info: &ClientInfo) -> Result<(), super::RiskError> {
    use crate::ports::geo;
    if geo::country_allowed(info.country.as_deref(), &config.allowed_countries, config.unknown_country) {
        return Ok(());
    }
    let country = info.country.clone().unwrap_or_else(|| "unknown".into());
    tracing::warn!(country = %country, "refused by the country policy");
    metrics::counter!("omamori_region_blocked_total", "country" => country).increment(1);
    Err(super::RiskError::RegionBlocked)
}

/// The client address: `peer` itself unless `peer` is inside one of `trusted` proxies; then walk the
/// X-Forwarded-For addresses (all X-Forwarded-For header lines, comma-separated entries, whitespace trimmed)
/// from the right, skipping addresses that are themselves trusted, and return the first (right-most)
/// untrusted one. If an entry does not parse as an IP address (also accept "ip:port" and "[v6]:port" forms),
/// stop and return the last trusted hop examined (never a value the client could forge past a trusted
/// proxy). If every entry is trusted, return the left-most one.
/// Normalise IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) to IPv4 first, for peer and entries.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    // All header lines in order form one list, walked from the right: last line first, each right to left.
    let entries = headers.get_all(X_FORWARDED_FOR).iter().rev().flat_map(|line| line.as_bytes().rsplit(|b| *b == b','));
    let mut last_trusted = peer;
    for entry in entries {
        let Some(ip) = parse_entry(entry) else {
            // Whatever lies beyond an unreadable hop cannot be attributed to a trusted proxy.
            return last_trusted;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

/// The throttling subnet of an address as a string key: the /24 for IPv4 ("203.0.113.0/24"), the /48 for
/// IPv6 ("2001:db8:1::/48").
pub fn subnet_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("{}/24", Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => format!("{}/48", Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
    }
}

/// The `http` crate has no constant for this de-facto standard header.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    // A proxy range may have been configured in the mapped form (::ffff:10.0.0.0/104); `ip` is canonical.
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    trusted.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// One `X-Forwarded-For` entry: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`, surrounding whitespace ignored.
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = text.parse::<SocketAddr>() {
        socket.ip()
    } else {
        IpAddr::V6(text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let headers = xff(&["198.51.100.7"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &headers, &[]), ip("203.0.113.9"));
        // A peer outside the trusted ranges cannot speak for anyone else either.
        assert_eq!(client_ip(ip("203.0.113.9"), &headers, &nets(&["10.0.0.0/8"])), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_yields_the_right_most_untrusted_entry() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &xff(&["198.51.100.7"]), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.0.0.2"), &xff(&["  198.51.100.7  "]), &trusted), ip("198.51.100.7"));
        // No header at all: the proxy is the only address there is.
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn a_forged_left_most_entry_is_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn several_header_lines_form_one_list() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The proxy appended its own line; the client's forged line comes first.
        let headers = xff(&["1.2.3.4", "198.51.100.7, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("198.51.100.7"));
        let headers = xff(&["1.2.3.4, 5.6.7.8", "10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("5.6.7.8"));
    }

    #[test]
    fn ports_and_brackets_are_accepted() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &xff(&["198.51.100.7:51234"]), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(peer, &xff(&["[2001:db8::7]:443"]), &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(peer, &xff(&["[2001:db8::7]"]), &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(peer, &xff(&["2001:db8::7"]), &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(peer, &xff(&["198.51.100.7, [2001:db8:ffff::1]:80"]), &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for bad in ["unknown", "", "not an ip", "198.51.100.7:99999", "[198.51.100.7]", "fe80::1%eth0", "_hidden"] {
            // The garbage sits between a forged address and the proxy: the forged one must not win.
            let headers = xff(&[&format!("1.2.3.4, {bad}")]);
            assert_eq!(client_ip(peer, &headers, &trusted), peer, "entry {bad:?}");
            let headers = xff(&[&format!("1.2.3.4, {bad}, 10.9.9.9")]);
            assert_eq!(client_ip(peer, &headers, &trusted), ip("10.9.9.9"), "entry {bad:?}");
        }
        // Garbage left of the right-most untrusted entry is never reached.
        assert_eq!(client_ip(peer, &xff(&["garbage, 198.51.100.7"]), &trusted), ip("198.51.100.7"));
        // Bytes that are not text are garbage too.
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"1.2.3.4, \xff\xfe").unwrap());
        assert_eq!(client_ip(peer, &headers, &trusted), peer);
    }

    #[test]
    fn ipv4_mapped_addresses_are_normalised() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mapped_proxy = ip("::ffff:10.0.0.2");
        assert_eq!(client_ip(mapped_proxy, &xff(&["198.51.100.7"]), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(mapped_proxy, &HeaderMap::new(), &trusted), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("::ffff:203.0.113.9"), &xff(&["1.2.3.4"]), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.2"), &xff(&["::ffff:198.51.100.7"]), &trusted), ip("198.51.100.7"));
        // A mapped entry inside the trusted range is recognised as a trusted hop.
        assert_eq!(client_ip(ip("10.0.0.2"), &xff(&["198.51.100.7, ::ffff:10.1.1.1"]), &trusted), ip("198.51.100.7"));
        // A proxy range written in the mapped form still matches a plain IPv4 peer.
        let mapped_trusted = nets(&["::ffff:10.0.0.0/104"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &xff(&["198.51.100.7"]), &mapped_trusted), ip("198.51.100.7"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16", "2001:db8:ffff::/48"]);
        let headers = xff(&["1.2.3.4, 198.51.100.7, 192.168.1.1, 2001:db8:ffff::3, 10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("198.51.100.7"));
        // Every entry trusted: the left-most hop is as far as the evidence goes.
        let headers = xff(&["192.168.1.1, 10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("192.168.1.1"));
    }

    #[test]
    fn subnet_keys() {
        assert_eq!(subnet_key(ip("203.0.113.77")), "203.0.113.0/24");
        assert_eq!(subnet_key(ip("10.1.2.3")), "10.1.2.0/24");
        assert_eq!(subnet_key(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
        assert_eq!(subnet_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1::/48");
        assert_eq!(subnet_key(ip("2001:db8:1:ffff::1")), "2001:db8:1::/48");
        assert_eq!(subnet_key(ip("2001:db8:2::1")), "2001:db8:2::/48");
        assert_eq!(subnet_key(ip("::1")), "::/48");
    }
}
