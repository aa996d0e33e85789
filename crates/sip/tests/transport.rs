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
        resp.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"),
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
