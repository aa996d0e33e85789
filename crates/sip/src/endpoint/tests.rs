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
    assert!(m.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY"));
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
            in_dialog("NOTIFY", "z9hG4bKnn", "nope", "x", 2).replace(";tag=x", ""),
            "SIP/2.0 481 Call/Transaction Does Not Exist",
        ),
        (
            in_dialog("REFER", "z9hG4bKrr", "nope", "x", 2).replace(";tag=x", ""),
            "SIP/2.0 403 Out-of-dialog REFER Not Accepted",
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
                tx[0].contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY"),
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
    /// Every message A sent, as text, in order.
    a_log: Vec<String>,
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
            a_log: Vec::new(),
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
                self.a_log.push(text.clone());
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

fn b_peer(p: &Pair) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: p.b_addr,
        connection: None,
    }
}

/// B stands in for a trunk: it challenges the first INVITE with 407 (and,
/// with `www`, the second with 401 for a second realm), then checks the
/// credentials A sends.
#[test]
fn outbound_invite_answers_407_then_401() {
    use crate::auth::{Algorithm, Authorization, Challenge, Credentials};
    let mut p = Pair::new();
    let target = format!("sip:+15551234@{}", p.b_addr);
    let creds = Credentials::new("trunkuser", "s3cret");
    let call_a =
        p.a.invite_with_auth(
            &target,
            "sip:agent@127.0.0.1",
            &target,
            b"v=0\r\n".to_vec(),
            b_peer(&p),
            Some(creds),
            p.now,
        )
        .unwrap();
    let mut lose = |_: &str| false;
    let (_, eb) = p.pump(&mut lose);
    let first = match &eb[0] {
        Event::IncomingCall(c) => c.clone(),
        e => panic!("{e:?}"),
    };
    assert!(first.authorization.is_none());
    let proxy = Challenge::new("proxy.example", "n-proxy", Algorithm::Md5);
    p.b.reject(
        first.call,
        407,
        "Proxy Authentication Required",
        vec![("Proxy-Authenticate".into(), proxy.to_header_value())],
        p.now,
    )
    .unwrap();
    let (ea, eb) = p.pump(&mut lose);
    assert!(ea.is_empty(), "no CallEnded on a challenge: {ea:?}");
    let second = incoming(&eb);
    let second_info = eb
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(second_info.call_id, first.call_id, "same Call-ID");
    let mut www = Challenge::new("trunk.example", "n-www", Algorithm::Sha256);
    www.opaque = Some("op".into());
    p.b.reject(
        second,
        401,
        "Unauthorized",
        vec![("WWW-Authenticate".into(), www.to_header_value())],
        p.now,
    )
    .unwrap();
    p.a_log.clear();
    let (_, eb) = p.pump(&mut lose);
    let third = p.a_log.iter().find(|m| m.starts_with("INVITE")).cloned();
    let third = third.expect("third INVITE");
    assert!(third.contains("CSeq: 3 INVITE"), "{third}");
    let header = |name: &str| {
        third
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} in {third}"))
    };
    // Both realms answered: the proxy's again (next nonce count), and the UAS's.
    let pa = Authorization::parse(&header("Proxy-Authorization: ")).unwrap();
    assert_eq!(pa.realm, "proxy.example");
    assert_eq!(pa.nc, Some(2));
    assert!(pa.verify("s3cret", "INVITE", b""));
    let wa = Authorization::parse(&header("Authorization: ")).unwrap();
    assert_eq!(wa.algorithm, Algorithm::Sha256);
    assert_eq!(wa.opaque.as_deref(), Some("op"));
    assert_eq!(wa.uri, target);
    assert!(wa.verify("s3cret", "INVITE", b""));
    let info = eb
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        info.authorization.as_deref(),
        Some(header("Authorization: ").as_str())
    );
    p.b.answer(info.call, b"v=0\r\n".to_vec(), p.now).unwrap();
    let (ea, _) = p.pump(&mut |_| false);
    assert!(
        ea.iter()
            .any(|e| matches!(e, Event::CallAnswered { call, .. } if *call == call_a))
    );
    // The 401 was ACKed by A's transaction (and the 2xx by A's core).
    assert!(
        p.a_log
            .iter()
            .any(|m| m.starts_with("ACK") && m.contains("CSeq: 2 ACK"))
    );
}

#[test]
fn outbound_invite_gives_up_when_realm_challenged_again() {
    use crate::auth::{Algorithm, Challenge, Credentials};
    let mut p = Pair::new();
    let target = format!("sip:x@{}", p.b_addr);
    let call_a =
        p.a.invite_with_auth(
            &target,
            "sip:agent@127.0.0.1",
            &target,
            Vec::new(),
            b_peer(&p),
            Some(Credentials::new("u", "wrong")),
            p.now,
        )
        .unwrap();
    for round in 0..4 {
        let (ea, eb) = p.pump(&mut |_| false);
        if let Some(Event::CallEnded { call, reason }) = ea.first() {
            assert_eq!(*call, call_a);
            assert_eq!(
                *reason,
                EndReason::Rejected {
                    status: 401,
                    reason: "Unauthorized".into(),
                    reason_header: Some("SIP;cause=401;text=\"bad credentials\"".into()),
                }
            );
            // The original INVITE, the answer to the first challenge and
            // the answer to the stale one: the third challenge ends it.
            assert_eq!(round, 3);
            return;
        }
        let c = incoming(&eb);
        // Round 1 answers the stale challenge again; round 2 is a plain
        // re-challenge of the same realm: A gives up.
        let mut ch = Challenge::new("r", format!("n{round}"), Algorithm::Md5);
        ch.stale = round == 1;
        p.b.reject(
            c,
            401,
            "Unauthorized",
            vec![
                ("WWW-Authenticate".into(), ch.to_header_value()),
                (
                    "Reason".into(),
                    "SIP;cause=401;text=\"bad credentials\"".into(),
                ),
            ],
            p.now,
        )
        .unwrap();
    }
    panic!("A never gave up");
}

#[test]
fn rejection_keeps_reason_header_and_no_creds_means_no_retry() {
    let mut p = Pair::new();
    let target = format!("sip:x@{}", p.b_addr);
    let call_a =
        p.a.invite(
            &target,
            "sip:a@127.0.0.1",
            &target,
            Vec::new(),
            b_peer(&p),
            p.now,
        )
        .unwrap();
    let (_, eb) = p.pump(&mut |_| false);
    p.b.reject(
        incoming(&eb),
        407,
        "Proxy Authentication Required",
        vec![(
            "Proxy-Authenticate".into(),
            "Digest realm=\"r\", nonce=\"n\"".into(),
        )],
        p.now,
    )
    .unwrap();
    let (ea, _) = p.pump(&mut |_| false);
    assert!(matches!(
        &ea[..],
        [Event::CallEnded { call, reason: EndReason::Rejected { status: 407, reason_header: None, .. } }] if *call == call_a
    ));
}

mod registration {
    use super::*;
    use crate::auth::{Algorithm, Authorization, Challenge, Credentials};
    use crate::register::{RegistrationConfig, RegistrationState};

    const REGISTRAR: &str = "127.0.0.1:5090";

    fn registrar() -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: REGISTRAR.parse().unwrap(),
            connection: None,
        }
    }

    fn config() -> RegistrationConfig {
        let mut cfg = RegistrationConfig::new(
            format!("sip:{REGISTRAR}"),
            format!("sip:1001@{REGISTRAR}"),
            registrar(),
        );
        cfg.credentials = Some(Credentials::new("1001", "pw"));
        cfg.expires = Duration::from_secs(120);
        cfg
    }

    /// The one REGISTER A has just sent.
    fn sent_register(ep: &mut Endpoint) -> rsip::Request {
        let (tx, _) = drain_keep_events(ep);
        let mut regs: Vec<rsip::Request> = tx
            .iter()
            .filter_map(|t| match parse(t.as_bytes()) {
                Ok(rsip::SipMessage::Request(r)) if r.method == rsip::Method::Register => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(regs.len(), 1, "{tx:?}");
        regs.pop().unwrap()
    }

    /// Drains transmissions, keeping the events queued for `states`.
    fn drain_keep_events(ep: &mut Endpoint) -> (Vec<String>, ()) {
        let mut tx = Vec::new();
        while let Some(t) = ep.poll_transmit() {
            assert_eq!(t.peer.addr, registrar().addr);
            tx.push(String::from_utf8(t.bytes.to_vec()).unwrap());
        }
        (tx, ())
    }

    fn states(ep: &mut Endpoint) -> Vec<RegistrationState> {
        let mut out = Vec::new();
        while let Some(e) = ep.poll_event() {
            if let Event::Registration { state, .. } = e {
                out.push(state);
            }
        }
        out
    }

    fn reply(
        ep: &mut Endpoint,
        req: &rsip::Request,
        code: u16,
        extra: &[(&str, String)],
        now: Instant,
    ) {
        let mut resp = response_to(req, code, "", Some("reg"));
        for (n, v) in extra {
            resp.headers.push(Header::Other(n.to_string(), v.clone()));
        }
        ep.handle_input(registrar(), &to_bytes(resp), now);
    }

    fn header<'a>(req: &'a rsip::Request, name: &str) -> Option<&'a str> {
        req.headers.iter().find_map(|h| {
            let s = h.to_string();
            let (n, _) = s.split_once(':')?;
            if n.eq_ignore_ascii_case(name) {
                Some(match h {
                    Header::Authorization(a) => a.value(),
                    Header::Expires(e) => e.value(),
                    Header::Contact(c) => c.value(),
                    Header::CallId(c) => c.value(),
                    Header::CSeq(c) => c.value(),
                    _ => return None,
                })
            } else {
                None
            }
        })
    }

    #[test]
    fn register_challenge_refresh_and_unregister() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        let id = ep.register(config(), t0);
        let r1 = sent_register(&mut ep);
        assert_eq!(states(&mut ep), vec![RegistrationState::Registering]);
        assert_eq!(header(&r1, "CSeq"), Some("1 REGISTER"));
        assert_eq!(header(&r1, "Expires"), Some("120"));
        assert_eq!(
            header(&r1, "Contact"),
            Some("<sip:voicegate@127.0.0.1:5060>")
        );
        assert!(header(&r1, "Authorization").is_none());
        let ch = Challenge::new("reg.example", "nonce-1", Algorithm::Sha256);
        reply(
            &mut ep,
            &r1,
            401,
            &[("WWW-Authenticate", ch.to_header_value())],
            t0,
        );
        let r2 = sent_register(&mut ep);
        assert!(states(&mut ep).is_empty(), "still Registering");
        assert_eq!(header(&r2, "CSeq"), Some("2 REGISTER"));
        assert_eq!(header(&r2, "Call-ID"), header(&r1, "Call-ID"));
        let auth = Authorization::parse(header(&r2, "Authorization").unwrap()).unwrap();
        assert_eq!(auth.uri, format!("sip:{REGISTRAR}"));
        assert_eq!(auth.nc, Some(1));
        assert!(auth.verify("pw", "REGISTER", b""));

        let t1 = t0 + Duration::from_millis(40);
        reply(
            &mut ep,
            &r2,
            200,
            &[(
                "Contact",
                "<sip:voicegate@127.0.0.1:5060>;expires=100".to_string(),
            )],
            t1,
        );
        // Granted 100 s: refresh at the later of 50 s and 100-60 = 40 s.
        assert_eq!(
            states(&mut ep),
            vec![RegistrationState::Registered {
                expires: Duration::from_secs(100),
                expires_at: t1 + Duration::from_secs(100),
                refresh_at: t1 + Duration::from_secs(50),
            }]
        );
        // Nothing until the refresh (the transaction's timer K runs first).
        let refresh_at = t1 + Duration::from_secs(50);
        while let Some(at) = ep.poll_timeout() {
            if at >= refresh_at {
                break;
            }
            ep.handle_timeout(at);
            assert!(ep.poll_transmit().is_none());
        }
        assert_eq!(ep.poll_timeout(), Some(refresh_at));
        ep.handle_timeout(refresh_at);
        let r3 = sent_register(&mut ep);
        assert_eq!(header(&r3, "CSeq"), Some("3 REGISTER"));
        // Credentials reused at once, with the next nonce count.
        let auth = Authorization::parse(header(&r3, "Authorization").unwrap()).unwrap();
        assert_eq!(auth.nc, Some(2));
        assert!(auth.verify("pw", "REGISTER", b""));
        // The registrar's nonce went stale meanwhile.
        let mut ch2 = Challenge::new("reg.example", "nonce-2", Algorithm::Sha256);
        ch2.stale = true;
        reply(
            &mut ep,
            &r3,
            401,
            &[("WWW-Authenticate", ch2.to_header_value())],
            refresh_at,
        );
        let r4 = sent_register(&mut ep);
        let auth = Authorization::parse(header(&r4, "Authorization").unwrap()).unwrap();
        assert_eq!((auth.nonce.as_str(), auth.nc), ("nonce-2", Some(1)));
        reply(
            &mut ep,
            &r4,
            200,
            &[("Expires", "3600".to_string())],
            refresh_at,
        );
        assert!(matches!(
            states(&mut ep)[..],
            [RegistrationState::Registered { expires, refresh_at: r, .. }]
                if expires == Duration::from_secs(3600) && r == refresh_at + Duration::from_secs(3540)
        ));

        ep.unregister(id, refresh_at).unwrap();
        let r5 = sent_register(&mut ep);
        assert_eq!(states(&mut ep), vec![RegistrationState::Unregistering]);
        assert_eq!(header(&r5, "Expires"), Some("0"));
        reply(&mut ep, &r5, 200, &[], refresh_at);
        assert_eq!(
            states(&mut ep),
            vec![RegistrationState::Unregistered { status: Some(200) }]
        );
        assert_eq!(ep.registration_count(), 0);
        assert!(ep.registration_state(id).is_none());
    }

    #[test]
    fn failures_back_off_exponentially_and_cap() {
        let mut ep = endpoint();
        let mut cfg = config();
        cfg.retry_min = Duration::from_secs(2);
        cfg.retry_max = Duration::from_secs(10);
        let t0 = Instant::now();
        ep.register(cfg, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let r = sent_register(&mut ep);
            reply(&mut ep, &r, 403, &[], now);
            let st = states(&mut ep);
            let retry_at = match st.last() {
                Some(RegistrationState::Failed {
                    status: Some(403),
                    retry_at,
                    ..
                }) => *retry_at,
                other => panic!("{other:?}"),
            };
            delays.push((retry_at - now).as_secs());
            // Skip to the retry; only timer K fires in between.
            while let Some(at) = ep.poll_timeout() {
                if at > retry_at {
                    break;
                }
                ep.handle_timeout(at);
                now = at;
                if at == retry_at {
                    break;
                }
            }
            assert_eq!(now, retry_at);
            assert_eq!(states(&mut ep), vec![RegistrationState::Registering]);
        }
        assert_eq!(delays, vec![2, 4, 8, 10, 10]);
        // Success resets the backoff; Retry-After is honoured.
        let r = sent_register(&mut ep);
        reply(&mut ep, &r, 503, &[("Retry-After", "30".to_string())], now);
        assert!(matches!(
            states(&mut ep)[..],
            [RegistrationState::Failed { status: Some(503), retry_at, .. }] if retry_at == now + Duration::from_secs(30)
        ));
    }

    #[test]
    fn timeout_423_and_wrong_password() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        ep.register(config(), t0);
        let r1 = sent_register(&mut ep);
        states(&mut ep);
        reply(&mut ep, &r1, 423, &[("Min-Expires", "600".to_string())], t0);
        let r2 = sent_register(&mut ep);
        assert_eq!(header(&r2, "Expires"), Some("600"));
        let ch = Challenge::new("r", "n", Algorithm::Md5);
        reply(
            &mut ep,
            &r2,
            401,
            &[("WWW-Authenticate", ch.to_header_value())],
            t0,
        );
        let r3 = sent_register(&mut ep);
        // Same realm challenged again, not stale: wrong password.
        let ch = Challenge::new("r", "n2", Algorithm::Md5);
        reply(
            &mut ep,
            &r3,
            401,
            &[("WWW-Authenticate", ch.to_header_value())],
            t0,
        );
        assert!(
            drain_keep_events(&mut ep).0.is_empty(),
            "no fourth REGISTER"
        );
        assert!(matches!(
            &states(&mut ep)[..],
            [RegistrationState::Failed { status: Some(401), reason, .. }] if reason.contains("rejected")
        ));
        // The retry (5 s later) goes unanswered: timer F, 32 s.
        let retry = ep.poll_timeout().unwrap();
        let mut last = retry;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            drain_keep_events(&mut ep);
            last = at;
            let st = states(&mut ep);
            if let Some(RegistrationState::Failed { status: None, .. }) = st.last() {
                break;
            }
        }
        assert!(last >= t0 + Duration::from_secs(5 + 32), "{:?}", last - t0);
    }

    #[test]
    fn unregister_while_in_flight_and_when_never_registered() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        let id = ep.register(config(), t0);
        let r1 = sent_register(&mut ep);
        ep.unregister(id, t0).unwrap();
        assert!(
            drain_keep_events(&mut ep).0.is_empty(),
            "waits for the response"
        );
        reply(&mut ep, &r1, 200, &[], t0);
        let r2 = sent_register(&mut ep);
        assert_eq!(header(&r2, "Expires"), Some("0"));
        reply(&mut ep, &r2, 200, &[], t0);
        assert_eq!(
            states(&mut ep).last(),
            Some(&RegistrationState::Unregistered { status: Some(200) })
        );
        // A registration that failed has nothing to remove.
        let id = ep.register(config(), t0);
        let r = sent_register(&mut ep);
        reply(&mut ep, &r, 404, &[], t0);
        states(&mut ep);
        ep.unregister(id, t0).unwrap();
        assert!(drain_keep_events(&mut ep).0.is_empty());
        assert_eq!(
            states(&mut ep),
            vec![RegistrationState::Unregistered { status: None }]
        );
        assert_eq!(ep.registration_count(), 0);
    }
}

mod transfer {
    use super::*;
    use crate::refer::ReferEvent;

    /// A calls B; both sides confirmed.
    fn connected() -> (Pair, CallHandle, CallHandle) {
        let mut p = Pair::new();
        let target = format!("sip:agent@{}", p.b_addr);
        let call_a =
            p.a.invite(
                &target,
                "sip:caller@127.0.0.1",
                &target,
                Vec::new(),
                b_peer(&p),
                p.now,
            )
            .unwrap();
        let (_, eb) = p.pump(&mut |_| false);
        let call_b = incoming(&eb);
        p.b.answer(call_b, b"v=0\r\n".to_vec(), p.now).unwrap();
        let (ea, eb) = p.pump(&mut |_| false);
        assert!(ea.iter().any(|e| matches!(e, Event::CallAnswered { .. })));
        assert!(eb.iter().any(|e| matches!(e, Event::CallConfirmed { .. })));
        (p, call_a, call_b)
    }

    fn refers(events: Vec<Event>) -> Vec<ReferEvent> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Refer(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn refer_accepted_notify_followed_to_final() {
        let (mut p, call_a, call_b) = connected();
        // B (the gateway's side of an inbound call) transfers A.
        p.b.refer(call_b, "sip:+15550001@10.0.0.5", p.now).unwrap();
        p.a_log.clear();
        let (ea, eb) = p.pump(&mut |_| false);
        assert_eq!(
            refers(ea),
            vec![ReferEvent::Incoming {
                call: call_a,
                refer_to: "<sip:+15550001@10.0.0.5>".into(),
                referred_by: Some("<sip:agent@127.0.0.1:5080>".into()),
            }]
        );
        assert_eq!(
            refers(eb),
            vec![
                ReferEvent::Accepted {
                    call: call_b,
                    status: 202
                },
                ReferEvent::Notify {
                    call: call_b,
                    status: Some(100),
                    reason: "Trying".into(),
                    terminated: false,
                },
            ]
        );
        let notify = p.a_log.iter().find(|m| m.starts_with("NOTIFY")).unwrap();
        assert!(notify.contains("Event: refer"), "{notify}");
        assert!(notify.contains("Subscription-State: active"), "{notify}");
        assert!(
            notify.contains("Content-Type: message/sipfrag;version=2.0"),
            "{notify}"
        );
        // A reports the referenced call's outcome.
        p.a.notify(call_a, 180, false, p.now).unwrap();
        p.a.notify(call_a, 200, true, p.now).unwrap();
        let (_, eb) = p.pump(&mut |_| false);
        assert_eq!(
            refers(eb),
            vec![
                ReferEvent::Notify {
                    call: call_b,
                    status: Some(180),
                    reason: "Ringing".into(),
                    terminated: false,
                },
                ReferEvent::Notify {
                    call: call_b,
                    status: Some(200),
                    reason: "OK".into(),
                    terminated: true,
                },
            ]
        );
        // Then the transferor hangs up.
        p.b.hangup(call_b, p.now).unwrap();
        let (ea, _) = p.pump(&mut |_| false);
        assert!(ea.iter().any(|e| matches!(
            e,
            Event::CallEnded {
                reason: EndReason::RemoteBye,
                ..
            }
        )));
        while p.advance() {
            p.pump(&mut |_| false);
        }
        assert_eq!(p.a.transaction_count(), (0, 0));
        assert_eq!(p.b.transaction_count(), (0, 0));
    }

    /// The peer is raw bytes: it refuses the REFER, ignores the next one,
    /// and sends NOTIFYs we must check.
    #[test]
    fn refer_refused_timed_out_and_bad_notify() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        ep.handle_input(
            peer(TransportKind::Udp),
            invite("z9hG4bKx1", "c-x").as_bytes(),
            t0,
        );
        let call = incoming(&drain(&mut ep).1);
        assert_eq!(
            ep.refer(call, "sip:x@10.0.0.1", t0),
            Err(CallError::WrongState(call, "send REFER"))
        );
        ep.answer(call, b"v=0\r\n".to_vec(), t0).unwrap();
        let tag = to_tag(&drain(&mut ep).0[0]);
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKx2", "c-x", &tag, 1).as_bytes(),
            t0,
        );
        drain(&mut ep);
        assert!(matches!(
            ep.refer(call, "not a uri\r\n", t0),
            Err(CallError::InvalidUri(_))
        ));
        ep.refer(call, "<tel:+15550002>", t0).unwrap();
        let (tx, _) = drain(&mut ep);
        assert!(
            tx[0].starts_with("REFER sip:sipp@127.0.0.1:5061 SIP/2.0"),
            "{}",
            tx[0]
        );
        assert!(tx[0].contains("Refer-To: <tel:+15550002>"), "{}", tx[0]);
        let refer = match parse(tx[0].as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        ep.handle_input(
            peer(TransportKind::Udp),
            &to_bytes(response_to(&refer, 603, "Declined", None)),
            t0,
        );
        let (_, ev) = drain(&mut ep);
        assert!(
            matches!(
                &ev[..],
                [Event::Refer(ReferEvent::Failed { status: Some(603), reason, .. })] if reason == "Declined"
            ),
            "{ev:?}"
        );
        // A second REFER gets no answer: timer F.
        ep.refer(call, "sip:y@10.0.0.1", t0).unwrap();
        let mut failed_at = None;
        while let Some(at) = ep.poll_timeout() {
            if at > t0 + Duration::from_secs(40) {
                break;
            }
            ep.handle_timeout(at);
            let (_, ev) = drain(&mut ep);
            if ev
                .iter()
                .any(|e| matches!(e, Event::Refer(ReferEvent::Failed { status: None, .. })))
            {
                failed_at = Some(at - t0);
            }
        }
        assert_eq!(failed_at, Some(Duration::from_secs(32)));
        // NOTIFYs from the peer: unknown package, missing state, then good.
        let notify = |event: &str, state: &str, cseq: u32| {
            let body = "SIP/2.0 486 Busy Here\r\n";
            in_dialog("NOTIFY", &format!("z9hG4bKn{cseq}"), "c-x", &tag, cseq).replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "{event}{state}Content-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            )
        };
        let cases = [
            (
                notify("Event: presence\r\n", "Subscription-State: active\r\n", 2),
                "SIP/2.0 489 Bad Event",
            ),
            (
                notify("Event: refer\r\n", "", 3),
                "SIP/2.0 400 Missing Subscription-State",
            ),
            (
                notify(
                    "o: refer;id=7\r\n",
                    "Subscription-State: terminated;reason=noresource\r\n",
                    4,
                ),
                "SIP/2.0 200 OK",
            ),
        ];
        for (msg, want) in cases {
            ep.handle_input(peer(TransportKind::Udp), msg.as_bytes(), t0);
            let (tx, ev) = drain(&mut ep);
            assert_eq!(status_line(&tx[0]), want);
            if want.contains("200") {
                assert!(
                    matches!(
                        &ev[..],
                        [Event::Refer(ReferEvent::Notify {
                            status: Some(486),
                            terminated: true,
                            ..
                        })]
                    ),
                    "{ev:?}"
                );
            } else {
                assert!(ev.is_empty(), "{ev:?}");
            }
        }
        // A REFER without Refer-To is refused.
        let bad = in_dialog("REFER", "z9hG4bKr9", "c-x", &tag, 5);
        ep.handle_input(peer(TransportKind::Udp), bad.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert_eq!(
            status_line(&tx[0]),
            "SIP/2.0 400 Missing or Multiple Refer-To"
        );
        assert!(ev.is_empty());
    }
}

mod reinvite {
    use super::*;

    fn sdp(version: u32, direction: &str) -> String {
        format!(
            "v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na={direction}\r\n"
        )
    }

    /// A re-INVITE from the raw UAC with `body` and extra header lines.
    fn reinvite(branch: &str, tag: &str, cseq: u32, body: &str, extra: &str) -> String {
        in_dialog("INVITE", branch, "c-h", tag, cseq).replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Contact: <sip:sipp@{UAC}>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    /// An answered, ACKed inbound call on an endpoint with `cfg`; the
    /// caller's INVITE carries `extra` header lines. Returns the call, our
    /// tag and the 200 OK.
    fn confirmed(ep: &mut Endpoint, extra: &str, t0: Instant) -> (CallHandle, String, String) {
        let inv = invite("z9hG4bKh1", "c-h").replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{extra}"),
        );
        ep.handle_input(peer(TransportKind::Udp), inv.as_bytes(), t0);
        let call = incoming(&drain(ep).1);
        ep.answer(call, sdp(1, "sendrecv").into_bytes(), t0)
            .unwrap();
        let ok = drain(ep).0.remove(0);
        let tag = to_tag(&ok);
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKh2", "c-h", &tag, 1).as_bytes(),
            t0,
        );
        let (_, ev) = drain(ep);
        assert!(matches!(ev[..], [Event::CallConfirmed { .. }]));
        (call, tag, ok)
    }

    #[test]
    fn hold_offer_goes_to_the_app_and_refresh_does_not() {
        let mut ep = Endpoint::new(
            EndpointConfig {
                reinvite_to_app: true,
                ..EndpointConfig::default()
            },
            7,
        );
        let t0 = Instant::now();
        let (call, tag, _) = confirmed(&mut ep, "", t0);
        // Hold: a new offer (version 2, sendonly).
        let hold = reinvite("z9hG4bKh3", &tag, 2, &sdp(2, "sendonly"), "");
        ep.handle_input(peer(TransportKind::Udp), hold.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 100 Trying");
        let [
            Event::Reinvite {
                call: c,
                body,
                content_type,
            },
        ] = &ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(*c, call);
        assert_eq!(content_type.as_deref(), Some("application/sdp"));
        assert!(String::from_utf8_lossy(body).contains("a=sendonly"));
        // A second re-INVITE while the first is unanswered: 500 + Retry-After.
        let overlap = reinvite("z9hG4bKh4", &tag, 3, &sdp(3, "sendrecv"), "");
        ep.handle_input(peer(TransportKind::Udp), overlap.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 500 Server Internal Error");
        assert!(tx[0].contains("Retry-After: "));
        assert!(ev.is_empty());
        // The caller ACKs the 500 (same branch): its timer G stops.
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKh4", "c-h", &tag, 3).as_bytes(),
            t0,
        );
        assert!(drain(&mut ep).1.is_empty());
        // The app answers recvonly; the 2xx is resent until the ACK.
        ep.answer_reinvite(call, sdp(2, "recvonly").into_bytes(), t0)
            .unwrap();
        let (tx, _) = drain(&mut ep);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
        assert!(tx[0].contains("CSeq: 2 INVITE") && tx[0].contains("a=recvonly"));
        assert_eq!(to_tag(&tx[0]), tag);
        ep.handle_timeout(t0 + Duration::from_millis(500));
        let (tx, _) = drain(&mut ep);
        assert_eq!(tx.len(), 1, "2xx retransmitted at T1");
        assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKh5", "c-h", &tag, 2).as_bytes(),
            t0 + Duration::from_millis(600),
        );
        let (_, ev) = drain(&mut ep);
        assert!(ev.is_empty(), "no second CallConfirmed: {ev:?}");
        ep.handle_timeout(t0 + Duration::from_millis(1500));
        assert!(drain(&mut ep).0.is_empty(), "no 2xx after the ACK");
        assert_eq!(
            ep.answer_reinvite(call, Vec::new(), t0),
            Err(CallError::WrongState(call, "answer a re-INVITE"))
        );
        // The same offer again (a refresh) is answered by the endpoint with
        // the current description.
        let again = reinvite("z9hG4bKh6", &tag, 4, &sdp(2, "sendonly"), "");
        ep.handle_input(
            peer(TransportKind::Udp),
            again.as_bytes(),
            t0 + Duration::from_secs(2),
        );
        let (tx, ev) = drain(&mut ep);
        assert!(ev.is_empty());
        assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
        assert!(tx[0].contains("a=recvonly"));
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKh7", "c-h", &tag, 4).as_bytes(),
            t0 + Duration::from_secs(2),
        );
        // Resume, refused by the app: the call goes on.
        let resume = reinvite("z9hG4bKh8", &tag, 5, &sdp(3, "sendrecv"), "");
        ep.handle_input(
            peer(TransportKind::Udp),
            resume.as_bytes(),
            t0 + Duration::from_secs(3),
        );
        assert!(matches!(drain(&mut ep).1[..], [Event::Reinvite { .. }]));
        ep.reject_reinvite(
            call,
            488,
            "Not Acceptable Here",
            t0 + Duration::from_secs(3),
        )
        .unwrap();
        let (tx, ev) = drain(&mut ep);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 488 Not Acceptable Here");
        assert!(ev.is_empty());
        assert_eq!(ep.call_count(), 1);
    }

    #[test]
    fn pending_reinvite_is_terminated_by_cancel_or_bye() {
        let mut ep = Endpoint::new(
            EndpointConfig {
                reinvite_to_app: true,
                ..EndpointConfig::default()
            },
            7,
        );
        let t0 = Instant::now();
        let (call, tag, _) = confirmed(&mut ep, "", t0);
        let hold = reinvite("z9hG4bKc3", &tag, 2, &sdp(2, "sendonly"), "");
        ep.handle_input(peer(TransportKind::Udp), hold.as_bytes(), t0);
        drain(&mut ep);
        let cancel = in_dialog("CANCEL", "z9hG4bKc3", "c-h", &tag, 2);
        ep.handle_input(peer(TransportKind::Udp), cancel.as_bytes(), t0);
        let (tx, _) = drain(&mut ep);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
        assert!(tx[1].starts_with("SIP/2.0 487") && tx[1].contains("CSeq: 2 INVITE"));
        assert!(ep.answer_reinvite(call, Vec::new(), t0).is_err());
        // Another one, then the caller hangs up.
        let hold = reinvite("z9hG4bKc4", &tag, 3, &sdp(3, "sendonly"), "");
        ep.handle_input(peer(TransportKind::Udp), hold.as_bytes(), t0);
        drain(&mut ep);
        let bye = in_dialog("BYE", "z9hG4bKc5", "c-h", &tag, 4);
        ep.handle_input(peer(TransportKind::Udp), bye.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert!(
            tx.iter()
                .any(|m| m.starts_with("SIP/2.0 487") && m.contains("CSeq: 3 INVITE"))
        );
        assert!(matches!(
            ev[..],
            [Event::CallEnded {
                reason: EndReason::RemoteBye,
                ..
            }]
        ));
        // Every transaction ends (the caller ACKs nothing: timer H).
        ep.handle_timeout(t0 + Duration::from_secs(40));
        ep.handle_timeout(t0 + Duration::from_secs(80));
        assert_eq!(ep.transaction_count(), (0, 0));
    }

    /// Regression: hanging up while the 2xx to a re-INVITE waits for its
    /// ACK, with the BYE unanswered, must let every timer run out.
    #[test]
    fn hangup_before_reinvite_ack_terminates() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        let (call, tag, _) = confirmed(&mut ep, "", t0);
        let hold = reinvite("z9hG4bKq3", &tag, 2, &sdp(2, "sendonly"), "");
        ep.handle_input(peer(TransportKind::Udp), hold.as_bytes(), t0);
        drain(&mut ep);
        let t1 = t0 + Duration::from_millis(100);
        ep.handle_timeout(t1);
        ep.hangup(call, t1).unwrap();
        let mut fired = 0;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            drain(&mut ep);
            fired += 1;
            assert!(fired < 1000, "timers never run out");
        }
        assert_eq!(ep.call_count(), 0);
        assert_eq!(ep.transaction_count(), (0, 0));
    }

    #[test]
    fn without_reinvite_to_app_the_endpoint_answers() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        let (_, tag, _) = confirmed(&mut ep, "", t0);
        let hold = reinvite("z9hG4bKa3", &tag, 2, &sdp(2, "sendonly"), "");
        ep.handle_input(peer(TransportKind::Udp), hold.as_bytes(), t0);
        let (tx, ev) = drain(&mut ep);
        assert!(ev.is_empty());
        assert_eq!(tx.len(), 1);
        assert_eq!(status_line(&tx[0]), "SIP/2.0 200 OK");
        assert!(tx[0].contains("a=sendrecv"), "current description");
    }

    fn timers(interval_s: u64) -> EndpointConfig {
        EndpointConfig {
            session_expires: Some(Duration::from_secs(interval_s)),
            ..EndpointConfig::default()
        }
    }

    #[test]
    fn uas_timer_peer_refreshes_or_we_hang_up() {
        let mut ep = Endpoint::new(timers(1800), 7);
        let t0 = Instant::now();
        let (_, tag, ok) = confirmed(
            &mut ep,
            "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
            t0,
        );
        assert!(ok.contains("Session-Expires: 120;refresher=uac"), "{ok}");
        assert!(ok.contains("Require: timer"), "{ok}");
        assert!(ok.contains("Supported: timer"), "{ok}");
        // The peer refreshes at 60 s: the interval restarts.
        let t1 = t0 + Duration::from_secs(60);
        let refresh = reinvite(
            "z9hG4bKt3",
            &tag,
            2,
            &sdp(1, "sendrecv"),
            "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
        );
        ep.handle_input(peer(TransportKind::Udp), refresh.as_bytes(), t1);
        let (tx, _) = drain(&mut ep);
        assert!(
            tx[0].contains("Session-Expires: 120;refresher=uac"),
            "{}",
            tx[0]
        );
        ep.handle_input(
            peer(TransportKind::Udp),
            in_dialog("ACK", "z9hG4bKt4", "c-h", &tag, 2).as_bytes(),
            t1,
        );
        // No more refreshes: BYE at 60 + 120 - min(32, 40) = 148 s.
        let mut bye_at = None;
        let mut ended = None;
        while let Some(at) = ep.poll_timeout() {
            if at > t0 + Duration::from_secs(400) {
                break;
            }
            ep.handle_timeout(at);
            let (tx, ev) = drain(&mut ep);
            if tx.iter().any(|m| m.starts_with("BYE ")) && bye_at.is_none() {
                bye_at = Some(at - t0);
            }
            for e in ev {
                if let Event::CallEnded { reason, .. } = e {
                    ended = Some(reason);
                }
            }
        }
        assert_eq!(bye_at, Some(Duration::from_secs(148)));
        assert_eq!(ended, Some(EndReason::SessionExpired));
    }

    /// A caller without timer support: we insert the timer with ourselves
    /// as refresher (RFC 4028 9); short intervals for tests are honoured.
    #[test]
    fn uas_refreshes_for_a_caller_without_timer_support() {
        let mut ep = Endpoint::new(
            EndpointConfig {
                min_se: Duration::from_secs(10),
                ..timers(10)
            },
            7,
        );
        let t0 = Instant::now();
        let (_, _, ok) = confirmed(&mut ep, "", t0);
        assert!(ok.contains("Session-Expires: 10;refresher=uas"), "{ok}");
        assert!(!ok.contains("Require: timer"), "{ok}");
        let mut refresh = None;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            if let Some(m) = drain(&mut ep)
                .0
                .into_iter()
                .find(|m| m.starts_with("INVITE "))
            {
                refresh = Some((at - t0, m));
                break;
            }
        }
        let (at, m) = refresh.expect("a refresh");
        assert_eq!(at, Duration::from_secs(5));
        assert!(
            m.starts_with("INVITE sip:sipp@127.0.0.1:5061 SIP/2.0"),
            "{m}"
        );
        assert!(m.contains("Session-Expires: 10;refresher=uac"), "{m}");
        assert!(m.contains("o=- 1 1 IN IP4"), "{m}");
        // The caller answers without any timer headers: we keep refreshing.
        let r = match parse(m.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        let t5 = t0 + at;
        ep.handle_input(
            peer(TransportKind::Udp),
            &to_bytes(response_to(&r, 200, "", None)),
            t5,
        );
        let (tx, _) = drain(&mut ep);
        assert!(tx[0].starts_with("ACK "), "{}", tx[0]);
        let mut next = None;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            if drain(&mut ep).0.iter().any(|m| m.starts_with("INVITE ")) {
                next = Some(at - t5);
                break;
            }
        }
        assert_eq!(next, Some(Duration::from_secs(5)));
    }

    #[test]
    fn too_small_interval_gets_422() {
        let mut ep = Endpoint::new(timers(1800), 7);
        let inv = invite("z9hG4bKs1", "c-s").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nSession-Expires: 30\r\n",
        );
        ep.handle_input(peer(TransportKind::Udp), inv.as_bytes(), Instant::now());
        let (tx, ev) = drain(&mut ep);
        assert_eq!(
            status_line(&tx[0]),
            "SIP/2.0 422 Session Interval Too Small"
        );
        assert!(tx[0].contains("Min-SE: 90"));
        assert!(ev.is_empty());
        // Timers off: the same INVITE is an ordinary call.
        let mut ep = endpoint();
        ep.handle_input(peer(TransportKind::Udp), inv.as_bytes(), Instant::now());
        incoming(&drain(&mut ep).1);
    }

    fn request_of(text: &str) -> rsip::Request {
        match parse(text.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => panic!("not a request: {text}"),
        }
    }

    /// Our outbound call to a raw peer that grants 90 s with us refreshing:
    /// the first refresh meets 491 (glare) and is retried 2.1-4 s later.
    #[test]
    fn uac_refresh_retried_after_491() {
        let mut ep = Endpoint::new(timers(90), 7);
        let t0 = Instant::now();
        let target = format!("sip:peer@{UAC}");
        let call = ep
            .invite(
                &target,
                "sip:vg@127.0.0.1",
                &target,
                sdp(1, "sendrecv").into_bytes(),
                peer(TransportKind::Udp),
                t0,
            )
            .unwrap();
        let (tx, _) = drain(&mut ep);
        assert!(tx[0].contains("Session-Expires: 90\r\n"), "{}", tx[0]);
        assert!(tx[0].contains("Supported: timer"), "{}", tx[0]);
        let inv = request_of(&tx[0]);
        let mut ok = response_to(&inv, 200, "", Some("peer"));
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:peer@{UAC}>"
            ))));
        ok.headers.push(Header::Other(
            "Session-Expires".into(),
            "90;refresher=uac".into(),
        ));
        ok.headers
            .push(Header::Other("Require".into(), "timer".into()));
        ok.body = sdp(1, "sendrecv").into_bytes();
        ep.handle_input(peer(TransportKind::Udp), &to_bytes(ok), t0);
        let (tx, ev) = drain(&mut ep);
        assert!(tx[0].starts_with("ACK "));
        assert!(ev.iter().any(|e| matches!(e, Event::CallAnswered { .. })));
        // Run to the refresh, past the INVITE transaction's timer M.
        let mut refresh = None;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            let (tx, _) = drain(&mut ep);
            if let Some(m) = tx.iter().find(|m| m.starts_with("INVITE ")) {
                refresh = Some((at - t0, m.clone()));
                break;
            }
        }
        let (at, m) = refresh.unwrap();
        assert_eq!(at, Duration::from_secs(45));
        assert!(
            m.contains("CSeq: 2 INVITE") && m.contains("Session-Expires: 90;refresher=uac"),
            "{m}"
        );
        assert!(
            m.contains("o=- 1 1 IN IP4"),
            "same description offered again"
        );
        let r1 = request_of(&m);
        let t45 = t0 + at;
        ep.handle_input(
            peer(TransportKind::Udp),
            &to_bytes(response_to(&r1, 491, "Request Pending", None)),
            t45,
        );
        let (tx, ev) = drain(&mut ep);
        assert!(
            tx[0].starts_with("ACK "),
            "the 491 is ACKed by its transaction"
        );
        assert!(ev.is_empty());
        let mut retry = None;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            let (tx, _) = drain(&mut ep);
            if let Some(m) = tx.iter().find(|m| m.starts_with("INVITE ")) {
                retry = Some((at - t45, m.clone()));
                break;
            }
        }
        let (after, m) = retry.unwrap();
        assert!(
            (Duration::from_millis(2100)..=Duration::from_secs(4)).contains(&after),
            "{after:?}"
        );
        assert!(m.contains("CSeq: 3 INVITE"), "{m}");
        let r2 = request_of(&m);
        let t_ok = t45 + after;
        let mut ok = response_to(&r2, 200, "", None);
        ok.headers.push(Header::Other(
            "Session-Expires".into(),
            "120;refresher=uac".into(),
        ));
        ep.handle_input(peer(TransportKind::Udp), &to_bytes(ok), t_ok);
        let (tx, _) = drain(&mut ep);
        assert!(
            tx[0].starts_with("ACK ") && tx[0].contains("CSeq: 3 ACK"),
            "{}",
            tx[0]
        );
        // The 2xx set 120 s: the next refresh is 60 s later.
        let mut next = None;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            let (tx, _) = drain(&mut ep);
            if tx.iter().any(|m| m.starts_with("INVITE ")) {
                next = Some(at - t_ok);
                break;
            }
        }
        assert_eq!(next, Some(Duration::from_secs(60)));
        assert_eq!(ep.call_count(), 1);
        let _ = call;
    }

    fn timer_pair(a_interval: u64, b_min_se: u64) -> Pair {
        let mut p = Pair::new();
        p.a = Endpoint::new(
            EndpointConfig {
                advertised: p.a_addr,
                ..timers(a_interval)
            },
            1,
        );
        p.b = Endpoint::new(
            EndpointConfig {
                advertised: p.b_addr,
                min_se: Duration::from_secs(b_min_se),
                ..timers(1800)
            },
            2,
        );
        p
    }

    #[test]
    fn uac_refreshes_and_peer_hangs_up_when_refreshes_stop() {
        // B asks for 180 s at least: A's 90 s INVITE gets 422 and is retried.
        let mut p = timer_pair(90, 180);
        let target = format!("sip:agent@{}", p.b_addr);
        let call_a =
            p.a.invite(
                &target,
                "sip:caller@127.0.0.1",
                &target,
                b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".to_vec(),
                b_peer(&p),
                p.now,
            )
            .unwrap();
        let (_, eb) = p.pump(&mut |_| false);
        let call_b = incoming(&eb);
        assert!(
            p.a_log
                .iter()
                .any(|m| m.starts_with("INVITE") && m.contains("Session-Expires: 180")),
            "{:?}",
            p.a_log
        );
        p.b.answer(
            call_b,
            b"v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\n".to_vec(),
            p.now,
        )
        .unwrap();
        let (ea, eb) = p.pump(&mut |_| false);
        assert!(ea.iter().any(|e| matches!(e, Event::CallAnswered { .. })));
        assert!(eb.iter().any(|e| matches!(e, Event::CallConfirmed { .. })));
        let t0 = p.now;
        // A supports timers, so B lets A refresh: every 90 s.
        p.a_log.clear();
        let mut refreshes = Vec::new();
        let mut stop = false;
        while p.now < t0 + Duration::from_secs(1000) {
            if !p.advance() {
                break;
            }
            let before = p.a_log.len();
            let now = p.now;
            let (ea, eb) = p.pump(&mut |line| stop && line.starts_with("INVITE"));
            for m in &p.a_log[before..] {
                if m.starts_with("INVITE") && !stop {
                    refreshes.push((now - t0).as_secs());
                }
            }
            if refreshes.len() == 3 {
                stop = true;
            }
            let ended_a = ea.iter().find_map(|e| match e {
                Event::CallEnded { call, reason } if *call == call_a => Some(reason.clone()),
                _ => None,
            });
            let ended_b = eb.iter().find_map(|e| match e {
                Event::CallEnded { reason, .. } => Some(reason.clone()),
                _ => None,
            });
            if let Some(r) = ended_a {
                // The refresh at 360 s is lost: timer B fires 32 s later
                // (before B's own limit, 270 + 180 - 32 = 418 s) and A
                // ends the session with BYE (RFC 4028 10).
                assert_eq!(r, EndReason::SessionExpired);
                assert_eq!((p.now - t0).as_secs(), 392);
                assert_eq!(ended_b, Some(EndReason::RemoteBye));
                assert_eq!(refreshes, vec![90, 180, 270]);
                return;
            }
            assert!(ended_b.is_none(), "{ended_b:?}");
        }
        panic!("B never ended the call; refreshes {refreshes:?}");
    }
}

/// A trunk that challenges in-dialog requests: the BYE of a call placed
/// with credentials is sent again with them; a REFER challenged twice for
/// the same realm fails with the 401.
#[test]
fn in_dialog_requests_answer_challenges() {
    use crate::auth::{Algorithm, Authorization, Challenge, Credentials};
    use crate::refer::ReferEvent;
    let mut ep = endpoint();
    let t0 = Instant::now();
    let target = format!("sip:+1555@{UAC}");
    let call = ep
        .invite_with_auth(
            &target,
            "sip:vg@127.0.0.1",
            &target,
            Vec::new(),
            peer(TransportKind::Udp),
            Some(Credentials::new("u", "p")),
            t0,
        )
        .unwrap();
    let (tx, _) = drain(&mut ep);
    let req = |text: &str| match parse(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => panic!("{text}"),
    };
    let inv = req(&tx[0]);
    let mut ok = response_to(&inv, 200, "", Some("trunk"));
    ok.headers
        .push(Header::Contact(rsip::headers::Contact::new(format!(
            "<sip:trunk@{UAC}>"
        ))));
    ep.handle_input(peer(TransportKind::Udp), &to_bytes(ok), t0);
    drain(&mut ep);
    let challenge = |nonce: &str| {
        vec![(
            "WWW-Authenticate".to_string(),
            Challenge::new("trunk", nonce, Algorithm::Md5).to_header_value(),
        )]
    };
    let reply = |ep: &mut Endpoint, r: &rsip::Request, code: u16, extra: Vec<(String, String)>| {
        let mut resp = response_to(r, code, "", None);
        for (n, v) in extra {
            resp.headers.push(Header::Other(n, v));
        }
        ep.handle_input(peer(TransportKind::Udp), &to_bytes(resp), t0);
        drain(ep)
    };

    ep.refer(call, "sip:sales@10.0.0.1", t0).unwrap();
    let refer = req(&drain(&mut ep).0[0]);
    let (tx, ev) = reply(&mut ep, &refer, 401, challenge("n1"));
    assert!(ev.is_empty());
    let refer2 = req(&tx[0]);
    assert_eq!(refer2.method, rsip::Method::Refer);
    let (tx, ev) = reply(&mut ep, &refer2, 401, challenge("n2"));
    assert!(tx.is_empty(), "no third REFER: {tx:?}");
    assert!(matches!(
        &ev[..],
        [Event::Refer(ReferEvent::Failed {
            status: Some(401),
            ..
        })]
    ));

    ep.hangup(call, t0).unwrap();
    let bye = req(&drain(&mut ep).0[0]);
    let (tx, ev) = reply(&mut ep, &bye, 407, {
        let mut c = challenge("n3");
        c[0].0 = "Proxy-Authenticate".into();
        c
    });
    assert!(ev.is_empty());
    let bye2 = req(&tx[0]);
    let text = bye2.to_string();
    let cseq = |r: &rsip::Request| crate::endpoint::cseq_number(r);
    assert_eq!(cseq(&bye2), cseq(&bye) + 1, "{text}");
    let pa = text
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
        .expect("credentials");
    assert!(Authorization::parse(pa).unwrap().verify("p", "BYE", b""));
    let (_, ev) = reply(&mut ep, &bye2, 200, Vec::new());
    assert!(matches!(
        &ev[..],
        [Event::CallEnded {
            reason: EndReason::LocalBye { status: Some(200) },
            ..
        }]
    ));
}

/// Regression: a malformed ACK (here with an empty Request-URI, as a SIPp
/// scenario with an unset `[next_url]` sends) is dropped, never answered;
/// the same fault in a BYE is answered 400.
#[test]
fn malformed_ack_is_dropped_not_answered() {
    let mut ep = endpoint();
    let now = Instant::now();
    let ack = in_dialog("ACK", "z9hG4bKack1", "bad-ack", "x", 1).replacen(
        "ACK sip:service@127.0.0.1:5060 SIP/2.0",
        "ACK  SIP/2.0",
        1,
    );
    ep.handle_input(peer(TransportKind::Udp), ack.as_bytes(), now);
    let (tx, ev) = drain(&mut ep);
    assert!(tx.is_empty(), "{tx:?}");
    assert!(ev.is_empty());
    assert_eq!(ep.stats().malformed, 1);
    let bye = in_dialog("BYE", "z9hG4bKbye1", "bad-bye", "x", 2).replacen(
        "BYE sip:service@127.0.0.1:5060 SIP/2.0",
        "BYE  SIP/2.0",
        1,
    );
    ep.handle_input(peer(TransportKind::Udp), bye.as_bytes(), now);
    let (tx, _) = drain(&mut ep);
    assert_eq!(tx.len(), 1, "{tx:?}");
    assert!(tx[0].starts_with("SIP/2.0 400"), "{}", tx[0]);
}
