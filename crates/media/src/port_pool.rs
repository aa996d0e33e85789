//! RTP/RTCP port pairs from a configured range (RFC 3550 section 11: RTP on an even
//! port, RTCP on the next odd one). A released pair is quarantined for a while so a
//! new call never receives the previous call's late media.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::MediaError;

/// An RTP port and its RTCP companion (`rtp + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    /// Even RTP port.
    pub rtp: u16,
    /// RTCP port, `rtp + 1`.
    pub rtcp: u16,
}

/// Port pool bookkeeping (sans-IO: time is passed in).
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    quarantined: VecDeque<(Instant, u16)>,
    quarantine: Duration,
    in_use: usize,
}

impl PortPool {
    /// A pool over `[first, last]`; odd bounds are rounded inwards to whole pairs.
    pub fn new(first: u16, last: u16, quarantine: Duration) -> Result<Self, MediaError> {
        let start = first + (first % 2);
        if last <= start {
            return Err(MediaError::Config {
                key: "media.rtp_port_range",
                reason: "range must hold at least one even/odd port pair",
            });
        }
        let free: VecDeque<u16> = (start..last).step_by(2).filter(|p| *p < last).collect();
        if free.is_empty() {
            return Err(MediaError::Config {
                key: "media.rtp_port_range",
                reason: "range must hold at least one even/odd port pair",
            });
        }
        Ok(Self {
            free,
            quarantined: VecDeque::new(),
            quarantine,
            in_use: 0,
        })
    }

    fn release_expired(&mut self, now: Instant) {
        while let Some(&(at, port)) = self.quarantined.front() {
            if now.saturating_duration_since(at) < self.quarantine {
                break;
            }
            self.quarantined.pop_front();
            self.free.push_back(port);
        }
    }

    /// Takes the least recently used free pair.
    pub fn allocate(&mut self, now: Instant) -> Option<PortPair> {
        self.release_expired(now);
        let rtp = self.free.pop_front()?;
        self.in_use += 1;
        Some(PortPair { rtp, rtcp: rtp + 1 })
    }

    /// Returns a pair; it becomes free again after the quarantine.
    pub fn release(&mut self, pair: PortPair, now: Instant) {
        self.in_use = self.in_use.saturating_sub(1);
        self.quarantined.push_back((now, pair.rtp));
    }

    /// Pairs free right now (not counting quarantined ones).
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Pairs handed out.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

/// A thread-safe pool that binds sockets (used by the gateway; the lock is held only
/// for bookkeeping, never across I/O or on the media path).
#[derive(Debug, Clone)]
pub struct SharedPortPool {
    inner: Arc<Mutex<PortPool>>,
    ip: IpAddr,
}

/// Bound RTP and RTCP sockets; the ports go back to the pool (quarantined) when
/// the lease (or the [`PortGuard`] split off it) drops.
#[derive(Debug)]
pub struct PortLease {
    /// RTP socket (even port).
    pub rtp: UdpSocket,
    /// RTCP socket (`rtp + 1`).
    pub rtcp: UdpSocket,
    guard: PortGuard,
}

impl PortLease {
    /// The leased ports.
    pub fn pair(&self) -> PortPair {
        self.guard.pair
    }

    /// Splits off the sockets; the ports are released when the guard drops.
    pub fn into_parts(self) -> (UdpSocket, UdpSocket, PortGuard) {
        (self.rtp, self.rtcp, self.guard)
    }
}

/// Releases a port pair to its pool when dropped.
#[derive(Debug)]
pub struct PortGuard {
    pair: PortPair,
    pool: Option<Arc<Mutex<PortPool>>>,
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take()
            && let Ok(mut p) = pool.lock()
        {
            p.release(self.pair, Instant::now());
        }
    }
}

impl SharedPortPool {
    /// A pool binding on `ip` over `[first, last]`.
    pub fn new(
        ip: IpAddr,
        first: u16,
        last: u16,
        quarantine: Duration,
    ) -> Result<Self, MediaError> {
        Ok(Self {
            inner: Arc::new(Mutex::new(PortPool::new(first, last, quarantine)?)),
            ip,
        })
    }

    /// Binds the next free pair; ports that fail to bind (used by another process)
    /// are quarantined and the next pair is tried.
    pub async fn lease(&self) -> Result<PortLease, MediaError> {
        let attempts = {
            let p = self.inner.lock().map_err(|_| MediaError::PortsExhausted)?;
            p.available()
        };
        for _ in 0..attempts.max(1) {
            let pair = {
                let mut p = self.inner.lock().map_err(|_| MediaError::PortsExhausted)?;
                p.allocate(Instant::now())
            }
            .ok_or(MediaError::PortsExhausted)?;
            let rtp = UdpSocket::bind(SocketAddr::new(self.ip, pair.rtp)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(self.ip, pair.rtcp)).await;
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    return Ok(PortLease {
                        rtp,
                        rtcp,
                        guard: PortGuard {
                            pair,
                            pool: Some(self.inner.clone()),
                        },
                    });
                }
                _ => {
                    if let Ok(mut p) = self.inner.lock() {
                        p.release(pair, Instant::now());
                    }
                }
            }
        }
        Err(MediaError::PortsExhausted)
    }

    /// Pairs free right now.
    pub fn available(&self) -> usize {
        self.inner.lock().map(|p| p.available()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_pairs_and_quarantine() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(10001, 10008, Duration::from_secs(30)).unwrap();
        // 10002/3, 10004/5, 10006/7
        assert_eq!(pool.available(), 3);
        let a = pool.allocate(t0).unwrap();
        assert_eq!(
            a,
            PortPair {
                rtp: 10002,
                rtcp: 10003
            }
        );
        let b = pool.allocate(t0).unwrap();
        let c = pool.allocate(t0).unwrap();
        assert!(pool.allocate(t0).is_none());
        pool.release(a, t0);
        assert!(
            pool.allocate(t0 + Duration::from_secs(10)).is_none(),
            "quarantined"
        );
        assert_eq!(pool.allocate(t0 + Duration::from_secs(31)), Some(a));
        pool.release(b, t0);
        pool.release(c, t0);
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn bad_range() {
        assert!(PortPool::new(10000, 10000, Duration::ZERO).is_err());
        assert!(PortPool::new(10001, 10002, Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn lease_binds_and_releases() {
        let pool = SharedPortPool::new(
            "127.0.0.1".parse().unwrap(),
            41000,
            41011,
            Duration::from_secs(60),
        )
        .unwrap();
        let before = pool.available();
        let lease = pool.lease().await.unwrap();
        assert_eq!(lease.pair().rtp % 2, 0);
        assert_eq!(lease.rtp.local_addr().unwrap().port(), lease.pair().rtp);
        drop(lease);
        // Released into quarantine, not back to free.
        assert_eq!(pool.available(), before.saturating_sub(1));
    }
}
