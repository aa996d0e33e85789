//! Endpoint tests with fake time: one side is raw bytes (what SIPp would
//! send), or a second `Endpoint` in a two-party harness with loss injected.

use super::*;

const UAC: &str = "127.0.0.1:5061";

fn peer(transport: TransportKind) -> Peer {
    Peer {
        transport,
        addr: UAC.parse().unwrap(),
        connection: None,
    }
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig::default(), 7)
}

fn invite(branch: &str, call_id: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {UAC};branch={branch}\r\n\
From: sipp <sip:sipp@{UAC}>;tag=caller\r\n\
To: sut <sip:service@127.0.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@{UAC}\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn in_dialog(method: &str, branch: &str, call_id: &str, to_tag: &str, cseq: u32) -> String {
    format!(
        "{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {UAC};branch={branch}\r\n\
From: sipp <sip:sipp@{UAC}>;tag=caller\r\n\
To: sut <sip:service@127.0.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn drain(ep: &mut Endpoint) -> (Vec<String>, Vec<Event>) {
    let mut tx = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        tx.push(String::from_utf8(t.bytes.to_vec()).unwrap());
    }
    let mut ev = Vec::new();
    while let Some(e) = ep.poll_event() {
        ev.push(e);
    }
    (tx, ev)
}

fn status_line(msg: &str) -> &str {
    msg.lines().next().unwrap()
}

fn to_tag(msg: &str) -> String {
    let to = msg
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To header");
    crate::message::tag_of(to)
}

fn incoming(ev: &[Event]) -> CallHandle {
    ev.iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .expect("IncomingCall")
}

#[test]
fn inbound_call_answer_ack_bye() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    ep.handle_input(
        peer(TransportKind::Udp),
        invite("z9hG4bK1", "c1").as_bytes(),
        t0,
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 100 Trying");
    let call = incoming(&ev);
    let Event::IncomingCall(info) = &ev[0] else {
        panic!()
    };
    assert_eq!(info.called_user.as_deref(), Some("service"));
    assert!(info.body.starts_with(b"v=0"));

    ep.answer(call, b"v=0\r\n".to_vec(), t0).unwrap();
    let (tx, _) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
    assert!(tx[0].contains("Contact: <sip:voicegate@127.0.0.1:5060>"));
    assert!(tx[0].contains("Content-Type: application/sdp"));
    let tag = to_tag(&tx[0]);
    assert!(!tag.is_empty());

    // The UAS core retransmits the 2xx at T1, 2T1... until the ACK.
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    ep.handle_timeout(t0 + Duration::from_millis(500));
    let (tx, _) = drain(&mut ep);
    assert_eq!(tx.len(), 1);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_millis(1500)));

    let ack = in_dialog("ACK", "z9hG4bK2", "c1", &tag, 1);
    ep.handle_input(
        peer(TransportKind::Udp),
        ack.as_bytes(),
        t0 + Duration::from_millis(600),
    );
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty());
    assert!(matches!(ev[..], [Event::CallConfirmed { .. }]));
    ep.handle_timeout(t0 + Duration::from_millis(1500));
    assert!(drain(&mut ep).0.is_empty(), "no 2xx after ACK");

    let bye = in_dialog("BYE", "z9hG4bK3", "c1", &tag, 2);
    ep.handle_input(
        peer(TransportKind::Udp),
        bye.as_bytes(),
        t0 + Duration::from_secs(2),
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
    assert!(tx[0].contains("CSeq: 2 BYE"));
    assert!(matches!(
        &ev[..],
        [Event::CallEnded {
            reason: EndReason::RemoteBye,
            ..
        }]
    ));
    // BYE retransmission: answered by the transaction, not 481.
    ep.handle_input(
        peer(TransportKind::Udp),
        bye.as_bytes(),
        t0 + Duration::from_secs(3),
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
    assert!(ev.is_empty());
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let inv = invite("z9hG4bKr", "c-r");
    ep.handle_input(peer(TransportKind::Udp), inv.as_bytes(), t0);
    let (_, ev) = drain(&mut ep);
    assert_eq!(ev.len(), 1);
    ep.handle_input(
        peer(TransportKind::Udp),
        inv.as_bytes(),
        t0 + Duration::from_millis(500),
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 100 Trying");
    assert!(ev.is_empty(), "no second IncomingCall");
}

#[test]
fn no_ack_ends_call_with_bye_at_64_t1() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    ep.handle_input(
        peer(TransportKind::Udp),
        invite("z9hG4bKn", "c-n").as_bytes(),
        t0,
    );
    let call = incoming(&drain(&mut ep).1);
    ep.answer(call, b"v=0\r\n".to_vec(), t0).unwrap();
    drain(&mut ep);
    let mut retransmits = Vec::new();
    let mut bye_at = None;
    let mut ended = false;
    while let Some(at) = ep.poll_timeout() {
        if at > t0 + Duration::from_secs(40) {
            break;
        }
        ep.handle_timeout(at);
        let (tx, ev) = drain(&mut ep);
        for m in tx {
            let ms = (at - t0).as_millis() as u64;
            if m.starts_with("SIP/2.0 200") {
                retransmits.push(ms);
            } else if m.starts_with("BYE ") && bye_at.is_none() {
                bye_at = Some(ms);
            }
        }
        ended |= ev.iter().any(|e| {
            matches!(
                e,
                Event::CallEnded {
                    reason: EndReason::AckTimeout,
                    ..
                }
            )
        });
    }
    assert_eq!(
        retransmits,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(bye_at, Some(32_000));
    assert!(ended);
}

#[test]
fn hangup_before_ack_waits_for_ack() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    ep.handle_input(
        peer(TransportKind::Udp),
        invite("z9hG4bKw", "c-w").as_bytes(),
        t0,
    );
    let call = incoming(&drain(&mut ep).1);
    ep.answer(call, b"v=0\r\n".to_vec(), t0).unwrap();
    let tag = to_tag(&drain(&mut ep).0[0]);
    ep.hangup(call, t0).unwrap();
    assert!(drain(&mut ep).0.is_empty(), "no BYE before ACK");
    let ack = in_dialog("ACK", "z9hG4bKw2", "c-w", &tag, 1);
    ep.handle_input(
        peer(TransportKind::Udp),
        ack.as_bytes(),
        t0 + Duration::from_millis(10),
    );
    let (tx, _) = drain(&mut ep);
    assert!(
        tx[0].starts_with("BYE sip:sipp@127.0.0.1:5061 SIP/2.0"),
        "{}",
        tx[0]
    );
    // The peer's 200 to the BYE ends the call.
    let bye = match parse(tx[0].as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    };
    let ok = to_bytes(response_to(&bye, 200, "", None));
    ep.handle_input(
        peer(TransportKind::Udp),
        &ok,
        t0 + Duration::from_millis(20),
    );
    let (_, ev) = drain(&mut ep);
    assert!(matches!(
        &ev[..],
        [Event::CallEnded {
            reason: EndReason::LocalBye { status: Some(200) },
            ..
        }]
    ));
}

#[test]
fn cancel_before_answer_gives_200_and_487() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc", "c-c");
    ep.handle_input(peer(TransportKind::Udp), inv.as_bytes(), t0);
    drain(&mut ep);
    let cancel = inv
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel = cancel
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("Content-Type: application/sdp\r\n", "");
    let cancel = format!(
        "{}\r\n\r\n",
        cancel.replace(
            &cancel
                .lines()
                .find(|l| l.starts_with("Content-Length"))
                .unwrap()
                .to_string(),
            "Content-Length: 0"
        )
    );
    ep.handle_input(
        peer(TransportKind::Udp),
        cancel.as_bytes(),
        t0 + Duration::from_millis(5),
    );
    let (tx, ev) = drain(&mut ep);
    assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
    assert!(tx[0].contains("CSeq: 1 CANCEL"));
    assert!(status_line(&tx[1]).starts_with("SIP/2.0 487"));
    assert!(tx[1].contains("CSeq: 1 INVITE"));
    assert!(matches!(
        &ev[..],
        [Event::CallEnded {
            reason: EndReason::Cancelled,
            ..
        }]
    ));
    // ACK for the 487 completes the INVITE transaction.
    let tag = to_tag(&tx[1]);
    let ack = in_dialog("ACK", "z9hG4bKc", "c-c", &tag, 1);
    ep.handle_input(
        peer(TransportKind::Udp),
        ack.as_bytes(),
        t0 + Duration::from_millis(10),
    );
    assert!(drain(&mut ep).0.is_empty());
    // Timer I (T4) later, and the CANCEL's timer J, everything is gone.
    ep.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn options_gets_capabilities() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let opt = format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKo;rport\r\n\
From: <sip:probe@{UAC}>;tag=p\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 0\r\nContent-Length: 0\r\n\r\n"
    );
    let src = Peer {
        addr: "127.0.0.1:40000".parse().unwrap(),
        ..peer(TransportKind::Udp)
    };
    ep.handle_input(src, opt.as_bytes(), t0);
    let t = ep.poll_transmit().unwrap();
    // rport: the response goes to the source port, not the Via port.
    assert_eq!(t.peer.addr, "127.0.0.1:40000".parse().unwrap());
    let m = String::from_utf8(t.bytes.to_vec()).unwrap();
    assert_eq!(status_line(&m), "SIP/2.0 200 OK");
    assert!(m.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"));
    assert!(m.contains("Accept: application/sdp"));
    assert!(m.contains("Supported:"));
    assert!(m.contains("rport=40000"));
}

#[test]
fn error_responses() {
    let t0 = Instant::now();
    let cases: Vec<(String, &str)> = vec![
        (
            invite("z9hG4bKm", "c-m").replace("Max-Forwards: 70", "Max-Forwards: 0"),
            "SIP/2.0 483 Too Many Hops",
        ),
        (
            invite("z9hG4bKq", "c-q").replace(
                "Max-Forwards: 70",
                "Max-Forwards: 70\r\nRequire: 100rel, foo",
            ),
            "SIP/2.0 420 Bad Extension",
        ),
        (
            in_dialog("BYE", "z9hG4bKb", "nope", "x", 2),
            "SIP/2.0 481 Call/Transaction Does Not Exist",
        ),
        (
            in_dialog("INFO", "z9hG4bKi", "nope", "x", 2).replace(";tag=x", ""),
            "SIP/2.0 405 Method Not Allowed",
        ),
        (
            in_dialog("FROB", "z9hG4bKf", "nope", "x", 2),
            "SIP/2.0 501 Not Implemented",
        ),
        (
            {
                let inv = invite("z9hG4bKt", "c-t");
                let cl = inv
                    .lines()
                    .find(|l| l.starts_with("Content-Length"))
                    .unwrap()
                    .to_string();
                inv.replace(&cl, "Content-Length: 999")
            },
            "SIP/2.0 400 Content-Length exceeds body",
        ),
        (
            invite("z9hG4bKs", "c-s").replace("CSeq: 1 INVITE", "CSeq: x INVITE"),
            "SIP/2.0 400 malformed CSeq header",
        ),
    ];
    for (req, want) in cases {
        let mut ep = endpoint();
        ep.handle_input(peer(TransportKind::Udp), req.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert_eq!(tx.len(), 1, "{want}: {tx:?}");
        assert_eq!(status_line(&tx[0]), want);
        assert!(ev.is_empty(), "{want}");
        if want.contains("420") {
            assert!(tx[0].contains("Unsupported: 100rel, foo"));
        }
        if want.contains("405") || want.contains("501") {
            assert!(
                tx[0].contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"),
                "{}",
                tx[0]
            );
        }
    }
}

#[test]
fn garbage_is_dropped_and_next_call_works() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"INVITE sip:x SIP/2.0\r\nVia: broken",
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
    ] {
        ep.handle_input(peer(TransportKind::Udp), junk, t0);
    }
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty() && ev.is_empty());
    ep.handle_input(
        peer(TransportKind::Udp),
        invite("z9hG4bKg", "c-g").as_bytes(),
        t0,
    );
    let (_, ev) = drain(&mut ep);
    incoming(&ev);
}

#[test]
fn stale_cseq_in_dialog_gets_500() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    ep.handle_input(
        peer(TransportKind::Udp),
        invite("z9hG4bKs1", "c-s1").as_bytes(),
        t0,
    );
    let call = incoming(&drain(&mut ep).1);
    ep.answer(call, b"v=0\r\n".to_vec(), t0).unwrap();
    let tag = to_tag(&drain(&mut ep).0[0]);
    let opt = in_dialog("OPTIONS", "z9hG4bKs2", "c-s1", &tag, 5);
    ep.handle_input(peer(TransportKind::Udp), opt.as_bytes(), t0);
    assert!(status_line(&drain(&mut ep).0[0]).starts_with("SIP/2.0 200"));
    let old = in_dialog("OPTIONS", "z9hG4bKs3", "c-s1", &tag, 4);
    ep.handle_input(peer(TransportKind::Udp), old.as_bytes(), t0);
    assert!(status_line(&drain(&mut ep).0[0]).starts_with("SIP/2.0 500"));
}

/// Two endpoints wired together; `drop` decides which transmissions are
/// lost. Time jumps to the next deadline when nothing is in flight.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
}

impl Pair {
    fn new() -> Self {
        let a_addr: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let b_addr: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        let cfg = |addr| EndpointConfig {
            advertised: addr,
            ..EndpointConfig::default()
        };
        Self {
            a: Endpoint::new(cfg(a_addr), 1),
            b: Endpoint::new(cfg(b_addr), 2),
            now: Instant::now(),
            a_addr,
            b_addr,
        }
    }

    /// Delivers everything in flight (both ways) until quiet; returns events
    /// from (a, b). `lose(first_line)` drops a message.
    fn pump(&mut self, lose: &mut dyn FnMut(&str) -> bool) -> (Vec<Event>, Vec<Event>) {
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                assert_eq!(t.peer.addr, self.b_addr);
                let text = String::from_utf8_lossy(&t.bytes).to_string();
                if !lose(status_line(&text)) {
                    let from = Peer {
                        transport: TransportKind::Udp,
                        addr: self.a_addr,
                        connection: None,
                    };
                    self.b.handle_input(from, &t.bytes, self.now);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                assert_eq!(t.peer.addr, self.a_addr);
                let text = String::from_utf8_lossy(&t.bytes).to_string();
                if !lose(status_line(&text)) {
                    let from = Peer {
                        transport: TransportKind::Udp,
                        addr: self.b_addr,
                        connection: None,
                    };
                    self.a.handle_input(from, &t.bytes, self.now);
                }
            }
            while let Some(e) = self.a.poll_event() {
                ea.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                eb.push(e);
            }
            if !moved {
                return (ea, eb);
            }
        }
    }

    /// Jumps to the earliest deadline of either side and fires it.
    fn advance(&mut self) -> bool {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) => {
                self.now = self.now.max(at);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }
}

#[test]
fn two_party_call_with_loss() {
    let mut p = Pair::new();
    let target = format!("sip:agent@{}", p.b_addr);
    let b_peer = Peer {
        transport: TransportKind::Udp,
        addr: p.b_addr,
        connection: None,
    };
    let call_a =
        p.a.invite(
            &target,
            "sip:caller@127.0.0.1",
            &target,
            b"v=0\r\n".to_vec(),
            b_peer,
            p.now,
        )
        .unwrap();
    // Lose the first INVITE and the first 200 OK.
    let mut lost_invite = false;
    let mut lost_ok = false;
    let mut lose = |line: &str| {
        if line.starts_with("INVITE") && !lost_invite {
            lost_invite = true;
            return true;
        }
        if line == "SIP/2.0 200 OK" && !lost_ok {
            lost_ok = true;
            return true;
        }
        false
    };
    let (_, eb) = p.pump(&mut lose);
    assert!(eb.is_empty(), "first INVITE was lost");
    assert!(p.advance(), "timer A");
    let (_, eb) = p.pump(&mut lose);
    let call_b = incoming(&eb);
    p.b.answer(call_b, b"v=0\r\n".to_vec(), p.now).unwrap();
    let (ea, _) = p.pump(&mut lose);
    assert!(ea.is_empty(), "the 200 was lost");
    // B's UAS core retransmits the 2xx; A answers with ACK.
    let mut answered = false;
    let mut confirmed = false;
    for _ in 0..5 {
        p.advance();
        let (ea, eb) = p.pump(&mut lose);
        answered |= ea
            .iter()
            .any(|e| matches!(e, Event::CallAnswered { call, .. } if *call == call_a));
        confirmed |= eb.iter().any(|e| matches!(e, Event::CallConfirmed { .. }));
        if answered && confirmed {
            break;
        }
    }
    assert!(answered && confirmed);
    p.a.hangup(call_a, p.now).unwrap();
    let (ea, eb) = p.pump(&mut |_| false);
    assert!(ea.iter().any(|e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::LocalBye { status: Some(200) },
            ..
        }
    )));
    assert!(eb.iter().any(|e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::RemoteBye,
            ..
        }
    )));
    // Everything drains: all transactions end by their timers.
    while p.advance() {
        p.pump(&mut |_| false);
    }
    assert_eq!(p.a.transaction_count(), (0, 0));
    assert_eq!(p.b.transaction_count(), (0, 0));
    assert_eq!(p.a.call_count() + p.b.call_count(), 0);
}

#[test]
fn two_party_rejection_and_cancel() {
    let mut p = Pair::new();
    let target = format!("sip:agent@{}", p.b_addr);
    let b_peer = Peer {
        transport: TransportKind::Udp,
        addr: p.b_addr,
        connection: None,
    };
    let call_a =
        p.a.invite(
            &target,
            "sip:caller@127.0.0.1",
            &target,
            Vec::new(),
            b_peer,
            p.now,
        )
        .unwrap();
    let (_, eb) = p.pump(&mut |_| false);
    let call_b = incoming(&eb);
    p.b.reject(call_b, 486, "Busy Here", Vec::new(), p.now)
        .unwrap();
    let (ea, _) = p.pump(&mut |_| false);
    assert!(ea.iter().any(|e| matches!(
        e,
        Event::CallEnded { call, reason: EndReason::Rejected { status: 486, .. } } if *call == call_a
    )));

    let call_a =
        p.a.invite(
            &target,
            "sip:caller@127.0.0.1",
            &target,
            Vec::new(),
            b_peer,
            p.now,
        )
        .unwrap();
    let (_, eb) = p.pump(&mut |_| false);
    incoming(&eb);
    p.a.hangup(call_a, p.now).unwrap();
    let (ea, eb) = p.pump(&mut |_| false);
    assert!(eb.iter().any(|e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::Cancelled,
            ..
        }
    )));
    assert!(ea.iter().any(|e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::Rejected { status: 487, .. },
            ..
        }
    )));
}
