//! Inbound access control: which source addresses may send INVITEs, and a
//! per-source rate limit on new INVITEs (a token bucket per IP).
//!
//! The allow list is `access.allow` plus every trunk's `sources`. A source
//! outside it gets 403 Forbidden. A source inside it that sends new INVITEs
//! faster than `access.invites_per_second` (bursts up to `access.burst`)
//! gets 503 with Retry-After: a trunk reads that as "try another node".

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Instant;

/// An IP network: an address and a prefix length (`10.0.0.0/8`,
/// `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8)")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses match
    /// IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// What to do with a new INVITE from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on.
    Allowed,
    /// Not on the allow list: 403.
    Forbidden,
    /// Over the source's rate: 503 with Retry-After.
    RateLimited,
}

/// The allow list and the per-source buckets.
#[derive(Debug)]
pub struct AccessControl {
    allow: Vec<Cidr>,
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER_S: f64 = 60.0;
/// Sweep the bucket table when it grows past this many sources.
const SWEEP_AT: usize = 10_000;

impl AccessControl {
    /// An allow list and a rate (new INVITEs per second per source, with bursts
    /// up to `burst`). A rate of 0 disables the limit.
    pub fn new(allow: Vec<Cidr>, rate_per_s: f64, burst: u32) -> Self {
        Self {
            allow,
            rate_per_s,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Decides on a new INVITE from `source` at `now`.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Admission {
        if !self.allow.iter().any(|c| c.contains(source)) {
            return Admission::Forbidden;
        }
        if self.rate_per_s <= 0.0 {
            return Admission::Allowed;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| {
                now.saturating_duration_since(b.updated).as_secs_f64() < FORGET_AFTER_S
            });
        }
        let b = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate_per_s).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admission::Allowed
        } else {
            Admission::RateLimited
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let odd: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.127")));
        let one: Cidr = "203.0.113.7".parse().unwrap();
        assert!(one.contains(ip("203.0.113.7")) && !one.contains(ip("203.0.113.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "1.2.3.4/x", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_sources_are_forbidden() {
        let ac = AccessControl::new(vec!["127.0.0.0/8".parse().unwrap()], 0.0, 1);
        let now = Instant::now();
        assert_eq!(ac.admit(ip("127.0.0.1"), now), Admission::Allowed);
        assert_eq!(ac.admit(ip("192.0.2.1"), now), Admission::Forbidden);
    }

    #[test]
    fn rate_limit_allows_the_burst_then_the_rate() {
        let ac = AccessControl::new(vec!["0.0.0.0/0".parse().unwrap()], 10.0, 5);
        let t0 = Instant::now();
        let src = ip("198.51.100.1");
        for _ in 0..5 {
            assert_eq!(ac.admit(src, t0), Admission::Allowed);
        }
        assert_eq!(ac.admit(src, t0), Admission::RateLimited);
        // Another source has its own bucket.
        assert_eq!(ac.admit(ip("198.51.100.2"), t0), Admission::Allowed);
        // 100 ms at 10/s refills one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(ac.admit(src, t1), Admission::Allowed);
        assert_eq!(ac.admit(src, t1), Admission::RateLimited);
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(ac.admit(src, t2), Admission::Allowed);
        }
        assert_eq!(ac.admit(src, t2), Admission::RateLimited);
    }
}

/// Digest authentication of callers outside the allow list (RFC 3261 22.2,
/// RFC 7616): a 401 challenge with a stateless nonce, then a check of the
/// retried INVITE's credentials.
pub struct DigestGate {
    server: voicegate_sip::auth::DigestServer,
    users: HashMap<String, String>,
}

/// What the gate says of an INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right credentials for this user.
    Valid(String),
    /// No (or expired) credentials: answer 401 with this WWW-Authenticate.
    Challenge(String),
    /// Wrong credentials: 403.
    Invalid(&'static str),
}

impl DigestGate {
    /// A gate for `users` (name -> password) in `realm`; `secret` keys the
    /// nonces.
    pub fn new(
        realm: &str,
        algorithm: voicegate_sip::auth::Algorithm,
        secret: Vec<u8>,
        users: HashMap<String, String>,
    ) -> Self {
        DigestGate {
            server: voicegate_sip::auth::DigestServer::new(realm, algorithm, secret),
            users,
        }
    }

    /// Checks an INVITE's `Authorization` (None: not sent).
    pub fn verify(
        &self,
        authorization: Option<&str>,
        request_uri: &str,
        body: &[u8],
        now_unix_s: u64,
    ) -> Verdict {
        use voicegate_sip::auth::DigestCheck;
        let Some(authz) = authorization else {
            return Verdict::Challenge(self.server.challenge(now_unix_s, false).to_header_value());
        };
        match self
            .server
            .check(authz, "INVITE", request_uri, body, now_unix_s, |user| {
                self.users.get(user).cloned()
            }) {
            DigestCheck::Valid { username } => Verdict::Valid(username),
            DigestCheck::Stale => {
                Verdict::Challenge(self.server.challenge(now_unix_s, true).to_header_value())
            }
            DigestCheck::Invalid(why) => Verdict::Invalid(why),
        }
    }
}
