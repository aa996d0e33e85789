//! The 20 ms media path does not allocate: a counting global allocator over 10 s
//! of simulated two-way media (RTP in, jitter buffer, decode, concealment, 16 kHz
//! resampling, VAD with speech frames, DTMF, playout with barge-in, encode, RTP and
//! RTCP out), after a warm-up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{A_ADDR, B_ADDR, config, voiced};
use voicegate_media::Codec;
use voicegate_media::pipeline::{CallMedia, MediaEvent, TransmitKind};
use voicegate_media::playout::{Segment, SegmentId};

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
}
