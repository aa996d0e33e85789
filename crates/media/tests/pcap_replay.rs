//! Replays the pcaps SIPp ships (`/usr/share/sip-tester`): RFC 4733 digits from
//! `dtmf_2833_*.pcap` (as captured, with marker bits stripped, and with the
//! packets duplicated and reordered), and G.711 A-law speech from `g711a.pcap`
//! through the whole inbound pipeline.
//!
//! The tests skip (with a note) when the sip-tester package is not installed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use voicegate_media::dtmf::DtmfReceiver;
use voicegate_media::pipeline::{CallMedia, MediaConfig, MediaEvent};
use voicegate_media::rtp;
use voicegate_media::{Codec, NegotiatedParams};

const PCAP_DIR: &str = "/usr/share/sip-tester";

/// One captured UDP datagram.
struct Datagram {
    at: Duration,
    src: SocketAddr,
    payload: Vec<u8>,
}

/// Minimal libpcap reader: classic format, either byte order, Ethernet (with an
/// optional 802.1Q tag) or Linux cooked capture, IPv4, UDP. Other frames are
/// skipped.
fn read_pcap(path: &Path) -> Vec<Datagram> {
    let data = std::fs::read(path).unwrap();
    assert!(data.len() >= 24, "short pcap");
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("not a pcap: magic {m:#x}"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(&data, 20);
    let mut out = vec![];
    let mut pos = 24;
    let mut first: Option<Duration> = None;
    while pos + 16 <= data.len() {
        let sec = u32_at(&data, pos) as u64;
        let frac = u32_at(&data, pos + 4) as u64;
        let incl = u32_at(&data, pos + 8) as usize;
        pos += 16;
        if pos + incl > data.len() {
            break;
        }
        let frame = &data[pos..pos + incl];
        pos += incl;
        let ts = Duration::from_secs(sec)
            + if nanos {
                Duration::from_nanos(frac)
            } else {
                Duration::from_micros(frac)
            };
        let at = ts - *first.get_or_insert(ts);
        let ip = match linktype {
            1 => {
                let mut off = 12;
                let mut ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
                if ethertype == 0x8100 {
                    off += 4;
                    ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
                }
                if ethertype != 0x0800 {
                    continue;
                }
                &frame[off + 2..]
            }
            113 => {
                if u16::from_be_bytes([frame[14], frame[15]]) != 0x0800 {
                    continue;
                }
                &frame[16..]
            }
            101 => frame,
            l => panic!("unsupported linktype {l}"),
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let udp = &ip[ihl..];
        let src_ip = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let src_port = u16::from_be_bytes([udp[0], udp[1]]);
        let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        out.push(Datagram {
            at,
            src: SocketAddr::new(src_ip.into(), src_port),
            payload: udp[8..udp_len.min(udp.len())].to_vec(),
        });
    }
    out
}

fn pcap(name: &str) -> Option<Vec<Datagram>> {
    let p = Path::new(PCAP_DIR).join(name);
    if !p.exists() {
        eprintln!(
            "skipping: {} not installed (apt install sip-tester)",
            p.display()
        );
        return None;
    }
    Some(read_pcap(&p))
}

const DIGITS: [(&str, char); 12] = [
    ("0", '0'),
    ("1", '1'),
    ("2", '2'),
    ("3", '3'),
    ("4", '4'),
    ("5", '5'),
    ("6", '6'),
    ("7", '7'),
    ("8", '8'),
    ("9", '9'),
    ("pound", '#'),
    ("star", '*'),
];

/// Feeds the datagrams to a `DtmfReceiver`, returns the digits reported.
fn receive(packets: &[Datagram], strip_marker: bool) -> String {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::new(8000);
    let mut digits = String::new();
    for d in packets {
        let mut bytes = d.payload.clone();
        if strip_marker {
            bytes[1] &= 0x7f;
        }
        let (h, payload) = rtp::parse(&bytes).unwrap();
        assert_eq!(h.payload_type, 101);
        assert!(!strip_marker || !h.marker);
        let now = t0 + d.at;
        if let Some(digit) = rx.handle_packet(h.ssrc, h.timestamp, payload, now).unwrap() {
            digits.push(digit.digit);
        }
        while let Some(digit) = rx.poll_digit() {
            digits.push(digit.digit);
        }
    }
    if let Some(digit) = rx.handle_timeout(t0 + Duration::from_secs(10)) {
        digits.push(digit.digit);
    }
    digits
}

#[test]
fn dtmf_2833_pcaps_give_each_digit_once() {
    for (name, digit) in DIGITS {
        let Some(packets) = pcap(&format!("dtmf_2833_{name}.pcap")) else {
            return;
        };
        assert!(packets.len() >= 4, "{name}: {} packets", packets.len());
        // The pcaps carry the end packet three times (RFC 4733 2.5.1.4).
        assert_eq!(receive(&packets, false), digit.to_string(), "{name}");
        assert_eq!(
            receive(&packets, true),
            digit.to_string(),
            "{name} without marker"
        );
    }
}

#[test]
fn dtmf_pcap_duplicated_and_reordered_and_end_lost() {
    let Some(packets) = pcap("dtmf_2833_5.pcap") else {
        return;
    };
    // Every packet twice, neighbours swapped.
    let mut mangled: Vec<Datagram> = vec![];
    for pair in packets.chunks(2) {
        for d in pair.iter().rev().chain(pair.iter()) {
            mangled.push(Datagram {
                at: d.at,
                src: d.src,
                payload: d.payload.clone(),
            });
        }
    }
    assert_eq!(receive(&mangled, true), "5");
    // All end packets lost: the digit still comes, once, after the timeout.
    let no_end: Vec<Datagram> = packets
        .iter()
        .filter(|d| d.payload[13] & 0x80 == 0)
        .map(|d| Datagram {
            at: d.at,
            src: d.src,
            payload: d.payload.clone(),
        })
        .collect();
    assert!(no_end.len() < packets.len());
    assert_eq!(receive(&no_end, false), "5");
}

/// Replays datagrams into a `CallMedia` at their capture times with a 20 ms tick.
fn replay(
    media: &mut CallMedia,
    packets: &[Datagram],
    t0: Instant,
    tail: Duration,
) -> Vec<MediaEvent> {
    let mut events = vec![];
    let end = t0 + packets.last().map(|d| d.at).unwrap_or_default() + tail;
    let mut i = 0;
    loop {
        let tick = media.poll_timeout();
        while i < packets.len() && t0 + packets[i].at <= tick {
            media.handle_rtp(&packets[i].payload, packets[i].src, t0 + packets[i].at);
            i += 1;
        }
        if tick > end {
            break;
        }
        media.handle_timeout(tick);
        while media.poll_transmit().is_some() {}
        while media.poll_recording().is_some() {}
        events.extend(std::iter::from_fn(|| media.poll_event()));
    }
    events
}

#[test]
fn dtmf_pcaps_through_the_pipeline() {
    let t0 = Instant::now();
    let remote: SocketAddr = "10.1.6.18:2006".parse().unwrap();
    let mut media = CallMedia::new(
        &MediaConfig::new(NegotiatedParams::simple(Codec::Pcmu, remote)),
        t0,
        SystemTime::now(),
    )
    .unwrap();
    // All twelve pcaps one after another, 500 ms apart, marker bits stripped.
    let mut all = vec![];
    let mut expected = String::new();
    for (k, (name, digit)) in DIGITS.iter().enumerate() {
        let Some(packets) = pcap(&format!("dtmf_2833_{name}.pcap")) else {
            return;
        };
        expected.push(*digit);
        for mut d in packets {
            d.at += Duration::from_millis(500 * k as u64 + 100);
            d.payload[1] &= 0x7f;
            all.push(d);
        }
    }
    let events = replay(&mut media, &all, t0, Duration::from_secs(1));
    let digits: String = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Dtmf(d) => Some(d.digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, expected);
    assert_eq!(media.stats().rtp_malformed, 0);
}

#[test]
fn g711a_pcap_is_decoded_and_speech_detected() {
    let Some(packets) = pcap("g711a.pcap") else {
        return;
    };
    let t0 = Instant::now();
    let remote: SocketAddr = "10.1.3.143:5000".parse().unwrap();
    let mut media = CallMedia::new(
        &MediaConfig::new(NegotiatedParams::simple(Codec::Pcma, remote)),
        t0,
        SystemTime::now(),
    )
    .unwrap();
    let events = replay(&mut media, &packets, t0, Duration::from_secs(2));
    let starts = events
        .iter()
        .filter(|e| matches!(e, MediaEvent::SpeechStart { .. }))
        .count();
    let ends = events
        .iter()
        .filter(|e| matches!(e, MediaEvent::SpeechEnd { .. }))
        .count();
    let frames = events
        .iter()
        .filter(|e| matches!(e, MediaEvent::SpeechFrame { .. }))
        .count();
    let st = media.stats();
    eprintln!("g711a.pcap: {starts} starts, {ends} ends, {frames} speech frames, {st:?}");
    assert!(starts >= 1, "no speech detected: {st:?}");
    assert_eq!(starts, ends);
    // Most of the 7 s capture is speech.
    assert!(frames >= 100, "speech frames {frames}");
    // 30 ms packets were learned by the jitter buffer and played without loss.
    assert_eq!(st.jitter.lost, 0, "{st:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MediaEvent::Latched { remote: r } if *r == remote))
    );
}
