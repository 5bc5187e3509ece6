//! Where webhooks may send requests. By default only to public addresses: a webhook URL is
//! chosen by whoever holds the admin key, but the requests leave from inside the network bigpeer
//! runs in, so loopback, private, link-local and other special-purpose addresses are refused
//! (server-side request forgery), unless `webhook_allow_private` allows them.
//!
//! The check holds for the addresses actually connected to: host names are resolved by
//! [`GuardedResolver`], which drops the refused addresses (so a name that later resolves to
//! 127.0.0.1 does not get through), IP literals are checked by [`check_url`] before each request,
//! and redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the webhook URL {0:?} is not an absolute http:// or https:// URL")]
    NotHttp(String),
    #[error("the webhook URL must not hold a user name or password")]
    Credentials,
    #[error("the webhook URL points to {0}, a loopback, private or special-purpose address (set webhook_allow_private to allow it)")]
    Private(IpAddr),
    #[error("{0} resolves to no address a webhook may be sent to (loopback, private and special-purpose addresses are refused unless webhook_allow_private is set)")]
    NoPublicAddress(String),
}

/// Parses and checks a webhook URL; an IP-literal host must be public unless `allow_private`.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, TargetError> {
    let url = Url::parse(text).map_err(|_| TargetError::NotHttp(text.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::NotHttp(text.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(TargetError::Private(ip));
        }
    }
    Ok(url)
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 (embeds IPv4)
                || (s[0] == 0x2002) // 6to4 (embeds IPv4)
                || (s[0..6] == [0, 0, 0, 0, 0, 0])) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network" 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved 240.0.0.0/4
}

/// A DNS resolver for the webhook client that only hands out allowed addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(TargetError::NoPublicAddress(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "::127.0.0.1",
            "2001:db8::1",
            "ff02::1",
        ] {
            let ip: IpAddr = private.parse().expect(private);
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().expect(public);
            assert!(is_public(ip), "{public}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        assert!(matches!(
            check_url("http://127.0.0.1:9000/x", false),
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            check_url("http://[::1]:9000/x", false),
            Err(TargetError::Private(_))
        ));
        assert!(
            matches!(
                check_url("http://0x7f.1/x", false),
                Err(TargetError::Private(_))
            ),
            "URL parsing normalises IPv4 forms"
        );
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
        assert_eq!(
            check_url("https://u:p@h.example/", true),
            Err(TargetError::Credentials)
        );
        for bad in ["ftp://h.example/", "h.example/x", "", "http://"] {
            assert!(
                matches!(check_url(bad, true), Err(TargetError::NotHttp(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let name: Name = "localhost".parse().expect("name");
        let err = GuardedResolver {
            allow_private: false,
        }
        .resolve(name)
        .await
        .err();
        assert!(err.is_some_and(|e| e.to_string().contains("localhost")));
        let name: Name = "localhost".parse().expect("name");
        let found: Vec<SocketAddr> = GuardedResolver {
            allow_private: true,
        }
        .resolve(name)
        .await
        .expect("resolve")
        .collect();
        assert!(found.iter().any(|a| a.ip().is_loopback()), "{found:?}");
    }
}
