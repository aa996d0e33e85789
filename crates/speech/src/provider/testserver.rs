//! Loopback HTTP/1.1 server for provider tests: scripted replies, recorded requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    status: u16,
    chunks: Vec<Vec<u8>>,
    chunked: bool,
    cut_off: bool,
    delay: Duration,
}

impl HttpReply {
    /// A complete body with Content-Length.
    pub fn full(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            chunks: vec![body],
            chunked: false,
            cut_off: false,
            delay: Duration::ZERO,
        }
    }

    /// A chunked body, one HTTP chunk per element, flushed one by one.
    pub fn chunked(status: u16, chunks: Vec<Vec<u8>>) -> Self {
        Self {
            status,
            chunks,
            chunked: true,
            cut_off: false,
            delay: Duration::ZERO,
        }
    }

    /// Closes the connection after the chunks, without the final empty chunk.
    pub fn cut_off(mut self) -> Self {
        self.cut_off = true;
        self
    }

    /// Waits this long before the first byte of the answer.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// The server; stops when dropped.
pub struct HttpServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Listens on 127.0.0.1:0; answers requests with `replies` in order, then 500s.
    pub async fn start(replies: Vec<HttpReply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(std::collections::VecDeque::from(replies)));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, recorded, replies).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.requests.lock().await.clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    recorded: Arc<Mutex<Vec<Request>>>,
    replies: Arc<Mutex<std::collections::VecDeque<HttpReply>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    recorded.lock().await.push(Request {
        method,
        path,
        headers,
        body,
    });
    let reply = replies
        .lock()
        .await
        .pop_front()
        .unwrap_or_else(|| HttpReply::full(500, b"no scripted reply".to_vec()));
    tokio::time::sleep(reply.delay).await;
    let reason = match reply.status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Error",
    };
    if reply.chunked {
        sock.write_all(
            format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                reply.status
            )
            .as_bytes(),
        )
        .await?;
        for c in &reply.chunks {
            sock.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                .await?;
            sock.write_all(c).await?;
            sock.write_all(b"\r\n").await?;
            sock.flush().await?;
        }
        if !reply.cut_off {
            sock.write_all(b"0\r\n\r\n").await?;
        }
    } else {
        let body = reply.chunks.concat();
        sock.write_all(
            format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reply.status,
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        sock.write_all(&body).await?;
    }
    sock.flush().await?;
    sock.shutdown().await
}

/// A TTS engine registered under another provider name (e.g. a second account), for
/// failover tests between two servers that speak the same protocol.
pub struct Named<T>(pub &'static str, pub T);

impl<T: crate::tts::TextToSpeech> crate::tts::TextToSpeech for Named<T> {
    fn name(&self) -> &'static str {
        self.0
    }

    fn synthesize(&self, req: crate::tts::TtsRequest) -> crate::tts::TtsStream {
        self.1.synthesize(req)
    }
}
