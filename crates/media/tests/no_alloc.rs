//! The 20 ms media path does not allocate: a counting global allocator over 10 s
//! of simulated two-way media (RTP in, jitter buffer, decode, concealment, 16 kHz
//! resampling, VAD with speech frames, DTMF, playout with barge-in, encode, RTP and
//! RTCP out), after a warm-up; then the same for two legs bridged both ways (PCMU
//! and Opus: taps with rate conversion, the hand-off through a bounded tokio
//! channel of fixed-size frames as in the driver, the lanes mixing into playout).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{A_ADDR, B_ADDR, config, voiced};
use voicegate_media::bridge::{BridgeTap, MAX_BRIDGE_FRAME};
use voicegate_media::pipeline::{CallMedia, MediaEvent, TransmitKind};
use voicegate_media::playout::{Segment, SegmentId};
use voicegate_media::{BridgeSourceId, Codec};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // try_with: the TLS slot may be gone during thread teardown.
    if ARMED.try_with(|a| a.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Moves datagrams between the cores through fixed buffers; drops every 13th RTP
/// packet from A to B. Returns (speech frames, dtmf digits, barge-ins) seen at B.
fn step(
    a: &mut CallMedia,
    b: &mut CallMedia,
    now: Instant,
    buf: &mut [[u8; 1500]; 8],
    lens: &mut [(usize, TransmitKind); 8],
    sent: &mut u64,
) -> (u64, u64, u64) {
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    let b_addr: SocketAddr = B_ADDR.parse().unwrap();
    a.handle_timeout(now);
    b.handle_timeout(now);
    let mut n = 0;
    while let Some(t) = a.poll_transmit() {
        buf[n][..t.payload.len()].copy_from_slice(t.payload);
        lens[n] = (t.payload.len(), t.kind);
        n += 1;
    }
    for i in 0..n {
        let (len, kind) = lens[i];
        match kind {
            TransmitKind::Rtp => {
                *sent += 1;
                if !sent.is_multiple_of(13) {
                    b.handle_rtp(&buf[i][..len], a_addr, now);
                }
            }
            TransmitKind::Rtcp => b.handle_rtcp(&buf[i][..len], a_addr, now),
        }
    }
    let mut n = 0;
    while let Some(t) = b.poll_transmit() {
        buf[n][..t.payload.len()].copy_from_slice(t.payload);
        lens[n] = (t.payload.len(), t.kind);
        n += 1;
    }
    for i in 0..n {
        let (len, kind) = lens[i];
        match kind {
            TransmitKind::Rtp => a.handle_rtp(&buf[i][..len], b_addr, now),
            TransmitKind::Rtcp => a.handle_rtcp(&buf[i][..len], b_addr, now),
        }
    }
    let mut out = (0, 0, 0);
    while let Some(e) = b.poll_event() {
        match e {
            MediaEvent::SpeechFrame { pcm, .. } => {
                std::hint::black_box(&pcm);
                out.0 += 1;
            }
            MediaEvent::Dtmf(_) => out.1 += 1,
            MediaEvent::BargeIn { .. } => out.2 += 1,
            _ => {}
        }
    }
    while a.poll_event().is_some() {}
    if let Some((c, g)) = b.poll_recording() {
        std::hint::black_box((c, g));
    }
    while a.poll_recording().is_some() {}
    out
}

fn run(codec: Codec) {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut a = CallMedia::new(&config(codec, B_ADDR, 1), t0, wall).unwrap();
    let mut b = CallMedia::new(&config(codec, A_ADDR, 2), t0, wall).unwrap();
    let rate = a.playout_rate_hz();
    // All audio is made before counting starts: the segments are moved in, not
    // copied. A talks 1.5 s out of every 2.5 s; B plays a long interruptible prompt
    // that A's speech barges into.
    let mut a_segments: Vec<Segment> = (0..6)
        .map(|i| Segment {
            id: SegmentId(i),
            interruptible: false,
            pcm: voiced(1500, rate),
        })
        .collect();
    let mut b_segments: Vec<Segment> = (0..6)
        .map(|i| Segment {
            id: SegmentId(100 + i),
            interruptible: true,
            pcm: vec![800; rate as usize * 20],
        })
        .collect();
    let mut buf = [[0u8; 1500]; 8];
    let mut lens = [(0usize, TransmitKind::Rtp); 8];
    let mut sent = 0u64;
    let mut now = t0;
    let tick = Duration::from_millis(20);
    let mut totals = (0, 0, 0);
    // 2 s warm-up, then 10 s counted.
    for k in 0..600u32 {
        if k == 100 {
            ARMED.with(|a| a.set(true));
        }
        if k % 125 == 10 {
            if let Some(s) = a_segments.pop() {
                a.enqueue(s).unwrap();
            }
            if let Some(s) = b_segments.pop() {
                b.enqueue(s).unwrap();
            }
        }
        if k % 125 == 100 {
            a.send_dtmf('5', 80).unwrap();
        }
        now += tick;
        let (f, d, bi) = step(&mut a, &mut b, now, &mut buf, &mut lens, &mut sent);
        if k >= 100 {
            totals.0 += f;
            totals.1 += d;
            totals.2 += bi;
        }
    }
    ARMED.with(|a| a.set(false));
    let allocations = ALLOCATIONS.swap(0, Ordering::Relaxed);
    let st = b.stats();
    // The run did real work.
    assert!(totals.0 > 200, "{codec:?}: speech frames {}", totals.0);
    assert!(totals.1 >= 3, "{codec:?}: dtmf {}", totals.1);
    assert!(totals.2 >= 3, "{codec:?}: barge-ins {}", totals.2);
    assert!(st.jitter.lost > 20, "{codec:?}: {st:?}");
    assert!(st.rtcp.sr_received >= 1, "{codec:?}: {st:?}");
    assert_eq!(allocations, 0, "{codec:?}: allocations on the media path");
}

/// Moves datagrams both ways between two cores through fixed buffers.
fn wire(
    x: &mut CallMedia,
    x_addr: SocketAddr,
    y: &mut CallMedia,
    y_addr: SocketAddr,
    now: Instant,
    buf: &mut [[u8; 1500]; 8],
    lens: &mut [(usize, TransmitKind); 8],
) {
    for dir in 0..2 {
        let (from, to, src) = if dir == 0 {
            (&mut *x, &mut *y, x_addr)
        } else {
            (&mut *y, &mut *x, y_addr)
        };
        let mut n = 0;
        while let Some(t) = from.poll_transmit() {
            buf[n][..t.payload.len()].copy_from_slice(t.payload);
            lens[n] = (t.payload.len(), t.kind);
            n += 1;
        }
        for i in 0..n {
            let (len, kind) = lens[i];
            match kind {
                TransmitKind::Rtp => to.handle_rtp(&buf[i][..len], src, now),
                TransmitKind::Rtcp => to.handle_rtcp(&buf[i][..len], src, now),
            }
        }
    }
}

/// The driver's bridge frame: fixed size, moved through the channel.
struct Frame {
    len: usize,
    pcm: [i16; MAX_BRIDGE_FRAME],
}

/// Takes a leg's tapped frames into the other leg's lane through a bounded
/// channel, as the two driver tasks do.
fn hand_off(
    from: &mut CallMedia,
    to: &mut CallMedia,
    source: BridgeSourceId,
    tx: &tokio::sync::mpsc::Sender<Frame>,
    rx: &mut tokio::sync::mpsc::Receiver<Frame>,
    now: Instant,
) {
    while let Some(pcm) = from.poll_bridge() {
        let mut f = Frame {
            len: pcm.len(),
            pcm: [0; MAX_BRIDGE_FRAME],
        };
        f.pcm[..f.len].copy_from_slice(pcm);
        assert!(tx.try_send(f).is_ok());
    }
    while let Ok(f) = rx.try_recv() {
        to.handle_bridge_frame(source, &f.pcm[..f.len], now);
    }
}

fn run_bridged() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (pa, ga, gb, pb): (SocketAddr, SocketAddr, SocketAddr, SocketAddr) = (
        "127.0.0.1:41000".parse().unwrap(),
        "127.0.0.1:41002".parse().unwrap(),
        "127.0.0.1:41004".parse().unwrap(),
        "127.0.0.1:41006".parse().unwrap(),
    );
    let mk = |codec, remote: SocketAddr, seed| {
        let mut c = config(codec, A_ADDR, seed);
        c.params.remote_addr = remote;
        CallMedia::new(&c, t0, wall).unwrap()
    };
    let mut ph_a = mk(Codec::Pcmu, ga, 1);
    let mut leg_a = mk(Codec::Pcmu, pa, 2);
    let mut leg_b = mk(Codec::Opus, pb, 3);
    let mut ph_b = mk(Codec::Opus, gb, 4);
    let (a_to_b, b_to_a) = (BridgeSourceId(1), BridgeSourceId(2));
    leg_a
        .set_bridge_tap(Some(
            BridgeTap::new(leg_a.playout_rate_hz(), leg_b.playout_rate_hz()).unwrap(),
        ))
        .unwrap();
    leg_b
        .set_bridge_tap(Some(
            BridgeTap::new(leg_b.playout_rate_hz(), leg_a.playout_rate_hz()).unwrap(),
        ))
        .unwrap();
    leg_b.set_bridge_source(Some(a_to_b));
    leg_a.set_bridge_source(Some(b_to_a));
    let (ab_tx, mut ab_rx) = tokio::sync::mpsc::channel::<Frame>(16);
    let (ba_tx, mut ba_rx) = tokio::sync::mpsc::channel::<Frame>(16);
    let mut a_segments: Vec<Segment> = (0..6)
        .map(|i| Segment {
            id: SegmentId(i),
            interruptible: false,
            pcm: voiced(1500, 8000),
        })
        .collect();
    let mut b_segments: Vec<Segment> = (0..6)
        .map(|i| Segment {
            id: SegmentId(10 + i),
            interruptible: false,
            pcm: voiced(1000, 16000),
        })
        .collect();
    let mut buf = [[0u8; 1500]; 8];
    let mut lens = [(0usize, TransmitKind::Rtp); 8];
    let mut now = t0;
    for k in 0..600u32 {
        if k == 100 {
            ARMED.with(|a| a.set(true));
        }
        if k % 125 == 10 {
            if let Some(s) = a_segments.pop() {
                ph_a.enqueue(s).unwrap();
            }
            if let Some(s) = b_segments.pop() {
                ph_b.enqueue(s).unwrap();
            }
        }
        if k % 125 == 100 {
            ph_a.send_dtmf('5', 80).unwrap();
        }
        now += Duration::from_millis(20);
        for c in [&mut ph_a, &mut leg_a, &mut leg_b, &mut ph_b] {
            c.handle_timeout(now);
        }
        hand_off(&mut leg_a, &mut leg_b, a_to_b, &ab_tx, &mut ab_rx, now);
        hand_off(&mut leg_b, &mut leg_a, b_to_a, &ba_tx, &mut ba_rx, now);
        wire(&mut ph_a, pa, &mut leg_a, ga, now, &mut buf, &mut lens);
        wire(&mut ph_b, pb, &mut leg_b, gb, now, &mut buf, &mut lens);
        for c in [&mut ph_a, &mut leg_a, &mut leg_b, &mut ph_b] {
            while let Some(e) = c.poll_event() {
                std::hint::black_box(&e);
            }
            while let Some(r) = c.poll_recording() {
                std::hint::black_box(r);
            }
        }
    }
    ARMED.with(|a| a.set(false));
    let allocations = ALLOCATIONS.swap(0, Ordering::Relaxed);
    let (sa, sb) = (leg_a.stats().bridge, leg_b.stats().bridge);
    // The run did real work: both directions bridged every tick, no starving.
    assert!(
        sa.frames_played > 500 && sb.frames_played > 500,
        "{sa:?} {sb:?}"
    );
    assert_eq!((sa.underruns, sb.underruns), (0, 0), "{sa:?} {sb:?}");
    assert_eq!(allocations, 0, "allocations on the bridged media path");
}

#[test]
fn ten_seconds_of_media_allocate_nothing() {
    // The counter counts.
    ARMED.with(|a| a.set(true));
    std::hint::black_box(Box::new(1u8));
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);
    // One test so no other test thread runs while counting is armed.
    run(Codec::Pcmu);
    run(Codec::Pcma);
    run(Codec::Opus);
    run_bridged();
}
