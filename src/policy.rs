//! Address policy deciding which resolved IP addresses a check may connect to.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Decides whether a check may connect to an IP address.
///
/// Private, loopback, link-local and other special-purpose addresses are
/// refused unless they fall inside one of the explicitly allowed networks.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

/// Refused IPv4 ranges with the phrase used in refusal reasons.
/// Order matters: the first match names the reason.
const V4_REFUSED: &[([u8; 4], u8, &str)] = &[
    (
        [169, 254, 169, 254],
        32,
        "cloud metadata (link-local) address",
    ),
    ([255, 255, 255, 255], 32, "broadcast address"),
    ([0, 0, 0, 0], 8, "\"this network\" address"),
    ([10, 0, 0, 0], 8, "private address"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT address"),
    ([127, 0, 0, 0], 8, "loopback address"),
    ([169, 254, 0, 0], 16, "link-local address"),
    ([172, 16, 0, 0], 12, "private address"),
    (
        [192, 0, 0, 0],
        24,
        "reserved (IETF protocol assignment) address",
    ),
    ([192, 0, 2, 0], 24, "documentation address"),
    ([192, 168, 0, 0], 16, "private address"),
    ([198, 18, 0, 0], 15, "benchmarking address"),
    ([198, 51, 100, 0], 24, "documentation address"),
    ([203, 0, 113, 0], 24, "documentation address"),
    ([224, 0, 0, 0], 4, "multicast address"),
    ([240, 0, 0, 0], 4, "reserved address"),
];

/// Refused IPv6 ranges that do not embed an IPv4 address.
const V6_REFUSED: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified address"),
    (1, 128, "loopback address"),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "discard-only address",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "documentation address",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "unique local (private) address",
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        "link-local address",
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "site-local address",
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        "multicast address",
    ),
];

impl AddressPolicy {
    /// Creates a policy that additionally admits the given networks.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed: allowed.into_iter().map(|n| n.trunc()).collect(),
        }
    }

    /// Parses a comma- and/or whitespace-separated list of CIDRs or bare IPs;
    /// an empty string yields a policy with no exceptions.
    pub fn parse_allowlist(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in s.split(|c: char| c == ',' || c.is_whitespace()) {
            if entry.is_empty() {
                continue;
            }
            nets.push(parse_entry(entry)?);
        }
        Ok(Self::new(nets))
    }

    /// A policy admitting every address (used where the target is trusted).
    #[cfg(test)]
    pub fn allow_all() -> Self {
        Self::new(vec![
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ])
    }

    /// Returns `Err(reason)` when a connection to `ip` must be refused,
    /// e.g. `"127.0.0.1 is a loopback address"`.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match ip {
            IpAddr::V4(v4) => self.check_v4(v4),
            IpAddr::V6(v6) => self.check_v6(v6),
        }
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    fn check_v4(&self, ip: Ipv4Addr) -> Result<(), String> {
        // A v6 allowlist entry written as ::ffff:a.b.c.d also covers a.b.c.d.
        if self.is_allowed(IpAddr::V4(ip)) || self.is_allowed(IpAddr::V6(ip.to_ipv6_mapped())) {
            return Ok(());
        }
        match v4_refusal(ip) {
            Some(what) => Err(format!("{ip} is a {what}")),
            None => Ok(()),
        }
    }

    fn check_v6(&self, ip: Ipv6Addr) -> Result<(), String> {
        if self.is_allowed(IpAddr::V6(ip)) {
            return Ok(());
        }
        if let Some(what) = v6_refusal(ip) {
            return Err(format!("{ip} is a {what}"));
        }
        // Embedded IPv4 addresses reach the v4 host, so judge the v4 address.
        match embedded_v4(ip) {
            Some((v4, kind)) => self
                .check_v4(v4)
                .map_err(|reason| format!("{ip} is an {kind} form of {v4}, and {reason}")),
            None => Ok(()),
        }
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, String> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "invalid allowlist entry \"{entry}\": expected a CIDR such as 10.0.0.0/8 or an IP address"
    ))
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let addr = u32::from(ip);
    V4_REFUSED.iter().find_map(|(net, len, what)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        (addr & mask == u32::from(Ipv4Addr::from(*net)) & mask).then_some(*what)
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    let addr = u128::from(ip);
    V6_REFUSED.iter().find_map(|(net, len, what)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
        (addr & mask == net & mask).then_some(*what)
    })
}

/// Extracts an IPv4 address carried inside an IPv6 one, with the form's name.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let addr = u128::from(ip);
    let low32 = Ipv4Addr::from((addr & 0xffff_ffff) as u32);
    let top96 = addr >> 32;
    if top96 == 0xffff {
        return Some((low32, "IPv4-mapped"));
    }
    if top96 == 0 {
        return Some((low32, "IPv4-compatible"));
    }
    if top96 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some((low32, "NAT64"));
    }
    if addr >> 112 == 0x2002 {
        return Some((Ipv4Addr::from(((addr >> 80) & 0xffff_ffff) as u32), "6to4"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &AddressPolicy, s: &str) -> String {
        p.check(s.parse().unwrap())
            .expect_err(&format!("{s} should be refused"))
    }

    #[test]
    fn default_policy_refuses_special_ranges() {
        let p = AddressPolicy::new(vec![]);
        let table = [
            ("0.0.0.0", "\"this network\""),
            ("0.255.1.2", "\"this network\""),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "cloud metadata"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("192.0.0.8", "reserved (IETF"),
            ("192.0.2.10", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.1", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("240.0.0.1", "reserved address"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
            ("64:ff9b::c0a8:0101", "private"),
            ("2002:7f00:0001::", "6to4 form of 127.0.0.1"),
            ("2002:0a00:0001::1", "private"),
        ];
        for (ip, phrase) in table {
            let reason = refused(&p, ip);
            assert!(reason.contains(phrase), "{ip}: {reason}");
        }
    }

    #[test]
    fn reason_names_address_and_kind() {
        let p = AddressPolicy::new(vec![]);
        assert_eq!(refused(&p, "127.0.0.1"), "127.0.0.1 is a loopback address");
        assert_eq!(
            refused(&p, "::ffff:127.0.0.1"),
            "::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, and 127.0.0.1 is a loopback address"
        );
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = AddressPolicy::new(vec![]);
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(p.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allowlist_admits_listed_networks_including_mapped_forms() {
        let p = AddressPolicy::parse_allowlist("127.0.0.1, 10.0.0.0/8 fd00::/8").unwrap();
        for ip in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.9.8.7",
            "::ffff:10.1.1.1",
            "fd00::5",
        ] {
            assert_eq!(p.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        assert!(refused(&p, "127.0.0.2").contains("loopback"));
        assert!(refused(&p, "::1").contains("loopback"));
        assert!(refused(&p, "192.168.0.1").contains("private"));
    }

    #[test]
    fn allowlist_v6_mapped_entry_covers_v4() {
        let p = AddressPolicy::parse_allowlist("::ffff:192.168.0.0/112").unwrap();
        assert_eq!(p.check("192.168.3.4".parse().unwrap()), Ok(()));
    }

    #[test]
    fn allowlist_parsing() {
        assert_eq!(AddressPolicy::parse_allowlist("").unwrap().allowed.len(), 0);
        assert_eq!(
            AddressPolicy::parse_allowlist(" , ").unwrap().allowed.len(),
            0
        );
        let p = AddressPolicy::parse_allowlist("10.1.2.3/8,::1").unwrap();
        assert_eq!(
            p.allowed,
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        let err = AddressPolicy::parse_allowlist("10.0.0.0/8, bogus/33").unwrap_err();
        assert!(err.contains("\"bogus/33\""), "{err}");
    }

    #[test]
    fn allow_all_admits_everything() {
        let p = AddressPolicy::allow_all();
        for ip in ["127.0.0.1", "::1", "169.254.169.254", "ff02::1"] {
            assert_eq!(p.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
    }
}
