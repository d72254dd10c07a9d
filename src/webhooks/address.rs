//! Which URLs a webhook may point at. Webhook URLs are user input that makes the server send
//! requests, so by default nothing on the server's own networks is reachable: loopback,
//! private, link-local (cloud metadata lives there), unique-local, shared (CGNAT) and other
//! special-purpose ranges are refused when the webhook is saved and again for the address
//! each connection actually uses (a name may resolve elsewhere later: DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL or address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("URLs may not carry credentials: put a token in the path or query instead")]
    Credentials,
    #[error("{0} is a loopback, private, link-local or otherwise internal address")]
    Forbidden(IpAddr),
    #[error("{0} resolves to no address")]
    Unresolvable(String),
}

/// Parses and checks a webhook URL's form (scheme, host, no credentials), and its host when
/// it is an address literal or `localhost`. Names are resolved separately.
pub fn parse(raw: &str, allow_private: bool) -> Result<Url, AddressError> {
    if raw.len() > MAX_URL_LEN {
        return Err(AddressError::Invalid(format!(
            "longer than {MAX_URL_LEN} characters"
        )));
    }
    let url = Url::parse(raw.trim()).map_err(|e| AddressError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AddressError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AddressError::Credentials);
    }
    match url.host() {
        None => return Err(AddressError::Invalid("no host".into())),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return Err(AddressError::Forbidden(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            }
        }
    }
    Ok(url)
}

/// Resolves `url`'s host and checks every address it has (the save-time check; the
/// connection-time check is [`GuardedResolver`]).
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<(), AddressError> {
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|_| AddressError::Unresolvable(name.to_owned()))?
        .collect();
    if addrs.is_empty() {
        return Err(AddressError::Unresolvable(name.to_owned()));
    }
    for addr in addrs {
        check_ip(addr.ip(), false)?;
    }
    Ok(())
}

/// Refuses internal addresses unless `allow_private`.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), AddressError> {
    if !allow_private && is_internal(ip) {
        return Err(AddressError::Forbidden(ip));
    }
    Ok(())
}

/// Whether `ip` is anything but a public unicast address: loopback, unspecified, private
/// (RFC 1918), shared (RFC 6598), link-local (with the 169.254.169.254 metadata address),
/// unique-local (fc00::/7, with fd00:ec2::254), multicast, broadcast, documentation,
/// benchmarking, reserved, and IPv6 forms that embed an internal IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local (deprecated), fec0::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0100 && ip.segments()[1..4] == [0, 0, 0] // discard-only
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail); // IPv4-compatible (deprecated)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail); // NAT64
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        )); // 6to4
    }
    None
}

/// The HTTP client's resolver: it resolves as usual, then drops internal addresses, so a
/// name that resolves (or later rebinds) to one cannot be reached.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| check_ip(addr.ip(), allow_private).is_ok())
                .collect();
            if addrs.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no allowed address").into();
                return Err(err);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl GuardedResolver {
    /// A resolver for the client builder.
    pub fn new(allow_private: bool) -> Arc<Self> {
        Arc::new(Self { allow_private })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_recognised_without_connecting() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
            "::127.0.0.1",
        ] {
            assert!(internal(ip), "{ip} is internal");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(!internal(ip), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_literal_hosts() {
        assert_eq!(
            parse("ftp://example.com/x", false),
            Err(AddressError::Scheme)
        );
        assert_eq!(
            parse("https://user:pw@example.com/", false),
            Err(AddressError::Credentials)
        );
        assert!(matches!(
            parse("not a url", false),
            Err(AddressError::Invalid(_))
        ));
        // parse() only: nothing here is ever connected to.
        for loopback in [
            "http://127.0.0.1:8080/hook",
            "http://127.1/hook",
            "http://[::1]/hook",
            "http://localhost:9000/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
        ] {
            assert!(
                matches!(parse(loopback, false), Err(AddressError::Forbidden(_))),
                "{loopback}"
            );
            assert!(parse(loopback, true).is_ok(), "{loopback} when allowed");
        }
        assert!(parse("https://hooks.example.com/tasknest?key=1", false).is_ok());
    }
}
