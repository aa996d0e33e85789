//! The tokio driver over real loopback sockets: two endpoints call each other
//! over UDP and TCP, and TCP keep-alive and framing errors behave.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use voicegate_sip::endpoint::{EndReason, EndpointConfig, Event, Peer, TransportKind};
use voicegate_sip::transport::{SipHandle, TransportConfig, spawn};

const WAIT: Duration = Duration::from_secs(10);

async fn start(seed: u64) -> (SipHandle, mpsc::Receiver<Event>) {
    let cfg = TransportConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        endpoint: EndpointConfig {
            advertised: "127.0.0.1:0".parse().unwrap(),
            ..EndpointConfig::default()
        },
        seed,
    };
    let (handle, events, _task) = spawn(cfg).await.expect("bind loopback");
    (handle, events)
}

async fn next(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("event in time")
        .expect("driver running")
}

async fn call_and_hang_up(transport: TransportKind) {
    let (uas, mut uas_ev) = start(1).await;
    let (uac, mut uac_ev) = start(2).await;
    let target = uas.local_addr();
    let uri = match transport {
        TransportKind::Udp => format!("sip:agent@{target}"),
        TransportKind::Tcp => format!("sip:agent@{target};transport=tcp"),
    };
    let peer = Peer {
        transport,
        addr: target,
        connection: None,
    };
    let call = uac
        .invite(&uri, "sip:caller@127.0.0.1", &uri, b"offer".to_vec(), peer)
        .await
        .unwrap();

    let Event::IncomingCall(incoming) = next(&mut uas_ev).await else {
        panic!("expected IncomingCall")
    };
    assert_eq!(incoming.body, b"offer");
    assert_eq!(incoming.peer.transport, transport);
    assert_eq!(incoming.called_user.as_deref(), Some("agent"));
    uas.answer(incoming.call, b"answer".to_vec()).await.unwrap();

    match next(&mut uac_ev).await {
        Event::CallAnswered { call: c, body } => {
            assert_eq!(c, call);
            assert_eq!(body, b"answer");
        }
        other => panic!("expected CallAnswered, got {other:?}"),
    }
    match next(&mut uas_ev).await {
        Event::CallConfirmed { call } => assert_eq!(call, incoming.call),
        other => panic!("expected CallConfirmed, got {other:?}"),
    }
    uac.hangup(call).await.unwrap();
    match next(&mut uas_ev).await {
        Event::CallEnded { reason, .. } => assert_eq!(reason, EndReason::RemoteBye),
        other => panic!("expected CallEnded, got {other:?}"),
    }
    match next(&mut uac_ev).await {
        Event::CallEnded { reason, .. } => {
            assert_eq!(reason, EndReason::LocalBye { status: Some(200) })
        }
        other => panic!("expected CallEnded, got {other:?}"),
    }
    let stats = uas.stats().await.unwrap();
    assert_eq!(stats.endpoint.malformed, 0);
}

#[tokio::test]
async fn call_over_udp() {
    call_and_hang_up(TransportKind::Udp).await;
}

#[tokio::test]
async fn call_over_tcp() {
    call_and_hang_up(TransportKind::Tcp).await;
}

#[tokio::test]
async fn refer_and_notify_over_udp() {
    use voicegate_sip::refer::ReferEvent;
    let (uas, mut uas_ev) = start(6).await;
    let (uac, mut uac_ev) = start(7).await;
    let target = uas.local_addr();
    let uri = format!("sip:agent@{target}");
    let peer = Peer {
        transport: TransportKind::Udp,
        addr: target,
        connection: None,
    };
    let call = uac
        .invite(&uri, "sip:caller@127.0.0.1", &uri, b"offer".to_vec(), peer)
        .await
        .unwrap();
    let Event::IncomingCall(incoming) = next(&mut uas_ev).await else {
        panic!("expected IncomingCall")
    };
    uas.answer(incoming.call, b"answer".to_vec()).await.unwrap();
    assert!(matches!(
        next(&mut uac_ev).await,
        Event::CallAnswered { .. }
    ));
    assert!(matches!(
        next(&mut uas_ev).await,
        Event::CallConfirmed { .. }
    ));

    uas.refer(incoming.call, "sip:sales@127.0.0.1:5999")
        .await
        .unwrap();
    match next(&mut uac_ev).await {
        Event::Refer(ReferEvent::Incoming {
            call: c, refer_to, ..
        }) => {
            assert_eq!(c, call);
            assert_eq!(refer_to, "<sip:sales@127.0.0.1:5999>");
        }
        other => panic!("expected Refer Incoming, got {other:?}"),
    }
    uac.notify(call, 200, true).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next(&mut uas_ev).await {
            Event::Refer(r) => seen.push(r),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen.contains(&ReferEvent::Accepted {
        call: incoming.call,
        status: 202
    }));
    assert_eq!(
        seen.last(),
        Some(&ReferEvent::Notify {
            call: incoming.call,
            status: Some(200),
            reason: "OK".into(),
            terminated: true,
        })
    );
    // No re-INVITE is pending: the driver reports the endpoint's refusal.
    assert!(matches!(
        uas.answer_reinvite(incoming.call, b"x".to_vec()).await,
        Err(voicegate_sip::transport::DriverError::Call(
            voicegate_sip::endpoint::CallError::WrongState(..)
        ))
    ));
    uas.hangup(incoming.call).await.unwrap();
    match next(&mut uac_ev).await {
        Event::CallEnded { reason, .. } => assert_eq!(reason, EndReason::RemoteBye),
        other => panic!("expected CallEnded, got {other:?}"),
    }
}

/// Digest access control end to end: the UAS challenges with 401 from a
/// `DigestServer`, the UAC answers with `invite_with_auth`, the UAS checks
/// the credentials and answers.
#[tokio::test]
async fn challenged_invite_over_udp() {
    use voicegate_sip::auth::{Algorithm, Credentials, DigestCheck, DigestServer};
    let (uas, mut uas_ev) = start(8).await;
    let (uac, mut uac_ev) = start(9).await;
    let server = DigestServer::new("voicegate", Algorithm::Sha256, b"secret".to_vec());
    let now_s = 1_700_000_000;
    let target = uas.local_addr();
    let uri = format!("sip:+15550100@{target}");
    let peer = Peer {
        transport: TransportKind::Udp,
        addr: target,
        connection: None,
    };
    let call = uac
        .invite_with_auth(
            &uri,
            "sip:trunk@127.0.0.1",
            &uri,
            b"offer".to_vec(),
            peer,
            Some(Credentials::new("trunk", "pw")),
        )
        .await
        .unwrap();
    let Event::IncomingCall(first) = next(&mut uas_ev).await else {
        panic!("expected IncomingCall")
    };
    assert!(first.authorization.is_none());
    let challenge = server.challenge(now_s, false).to_header_value();
    uas.reject(
        first.call,
        401,
        "Unauthorized",
        vec![("WWW-Authenticate".into(), challenge)],
    )
    .await
    .unwrap();
    let second = loop {
        match next(&mut uas_ev).await {
            Event::IncomingCall(c) => break c,
            Event::CallEnded { call, .. } => assert_eq!(call, first.call),
            other => panic!("unexpected {other:?}"),
        }
    };
    let check = server.check(
        second.authorization.as_deref().expect("credentials"),
        "INVITE",
        &second.request_uri,
        &second.body,
        now_s + 1,
        |user| (user == "trunk").then(|| "pw".to_string()),
    );
    assert_eq!(
        check,
        DigestCheck::Valid {
            username: "trunk".into()
        }
    );
    uas.answer(second.call, b"answer".to_vec()).await.unwrap();
    match next(&mut uac_ev).await {
        Event::CallAnswered { call: c, body } => {
            assert_eq!(c, call);
            assert_eq!(body, b"answer");
        }
        other => panic!("expected CallAnswered, got {other:?}"),
    }
    uac.hangup(call).await.unwrap();
}

async fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("read in time")
        .expect("read");
    buf.truncate(n);
    buf
}

fn options(addr: SocketAddr) -> String {
    format!(
        "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKopt1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:{addr}>\r\n\
         Call-ID: opt-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn tcp_keepalive_ping_gets_pong_and_requests_are_answered_in_order() {
    let (uas, _ev) = start(3).await;
    let mut s = TcpStream::connect(uas.local_addr()).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    assert_eq!(read_some(&mut s).await, b"\r\n");
    // A request split across writes.
    let req = options(uas.local_addr());
    let (a, b) = req.split_at(40);
    s.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b.as_bytes()).await.unwrap();
    let resp = String::from_utf8(read_some(&mut s).await).unwrap();
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    assert!(
        resp.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY"),
        "{resp}"
    );
}

#[tokio::test]
async fn tcp_stream_without_content_length_is_closed() {
    let (uas, _ev) = start(4).await;
    let mut s = TcpStream::connect(uas.local_addr()).await.unwrap();
    s.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n\r\n")
        .await
        .unwrap();
    // The driver closes the connection: read returns EOF.
    assert_eq!(read_some(&mut s).await, b"");
    // The listener still serves new connections.
    let mut s = TcpStream::connect(uas.local_addr()).await.unwrap();
    s.write_all(options(uas.local_addr()).as_bytes())
        .await
        .unwrap();
    let resp = String::from_utf8(read_some(&mut s).await).unwrap();
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
}

mod registrar {
    use super::*;
    use rsip::Header;
    use rsip::headers::UntypedHeader;
    use tokio::net::UdpSocket;
    use voicegate_sip::auth::{Algorithm, Authorization, Challenge, Credentials};
    use voicegate_sip::message::{parse, response_to, to_bytes};
    use voicegate_sip::register::{RegistrationConfig, RegistrationState};

    async fn recv_request(sock: &UdpSocket) -> (rsip::Request, SocketAddr) {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("REGISTER in time")
            .unwrap();
        match parse(&buf[..n]).unwrap() {
            rsip::SipMessage::Request(r) => (r, from),
            other => panic!("expected a request, got {other}"),
        }
    }

    fn header(req: &rsip::Request, name: &str) -> Option<String> {
        voicegate_sip::message::header_values(&req.headers, name)
            .first()
            .map(|s| s.to_string())
    }

    #[tokio::test]
    async fn register_with_digest_then_unregister_on_drop() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let (sip, mut events) = start(5).await;
        let mut cfg = RegistrationConfig::new(
            format!("sip:{addr}"),
            format!("sip:2000@{addr}"),
            Peer {
                transport: TransportKind::Udp,
                addr,
                connection: None,
            },
        );
        cfg.credentials = Some(Credentials::new("2000", "secret"));
        cfg.expires = Duration::from_secs(300);
        let id = sip.register(cfg).await.unwrap();

        let (r1, from) = recv_request(&sock).await;
        assert_eq!(r1.method, rsip::Method::Register);
        let mut resp = response_to(&r1, 401, "Unauthorized", Some("reg1"));
        resp.headers.push(Header::WwwAuthenticate(
            rsip::headers::WwwAuthenticate::new(
                Challenge::new("test", "abc", Algorithm::Sha256).to_header_value(),
            ),
        ));
        sock.send_to(&to_bytes(resp), from).await.unwrap();

        let (r2, from) = recv_request(&sock).await;
        let auth = r2
            .headers
            .iter()
            .find_map(|h| match h {
                Header::Authorization(a) => Some(a.value().to_string()),
                _ => None,
            })
            .expect("Authorization");
        let auth = Authorization::parse(&auth).unwrap();
        assert!(auth.verify("secret", "REGISTER", b""));
        let mut ok = response_to(&r2, 200, "OK", Some("reg1"));
        ok.headers
            .push(Header::Expires(rsip::headers::Expires::new("120")));
        sock.send_to(&to_bytes(ok), from).await.unwrap();

        loop {
            match next(&mut events).await {
                Event::Registration {
                    registration,
                    state: RegistrationState::Registered { expires, .. },
                } => {
                    assert_eq!(registration, id);
                    assert_eq!(expires, Duration::from_secs(120));
                    break;
                }
                Event::Registration { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }

        // Dropping the last handle unregisters before the driver stops.
        drop(sip);
        let (r3, from) = recv_request(&sock).await;
        assert_eq!(header(&r3, "Expires").as_deref(), Some("0"));
        assert!(
            r3.headers
                .iter()
                .any(|h| matches!(h, Header::Authorization(_))),
            "credentials reused"
        );
        sock.send_to(&to_bytes(response_to(&r3, 200, "OK", Some("reg1"))), from)
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
                Some(Event::Registration {
                    state: RegistrationState::Unregistered { status },
                    ..
                }) => {
                    assert_eq!(status, Some(200));
                    break;
                }
                Some(_) => {}
                None => panic!("driver stopped before reporting the unregister"),
            }
        }
    }
}
