//! Real local receivers for the notification channels: a small SMTP server and an HTTP listener,
//! each started by the test on a free port, recording what arrives and answering failures on
//! demand so that retries can be seen.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One e-mail as the SMTP server received it, its body decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub headers: String,
    pub body: String,
}

/// An SMTP server that accepts everything, except that it answers `451` (try later) to the first
/// `transient_failures` messages.
pub struct SmtpReceiver {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    pub refused: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpReceiver {
    pub async fn start(transient_failures: usize) -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        let (m, r) = (mails.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (m, r) = (m.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = session(socket, m, r, transient_failures).await;
                });
            }
        });
        SmtpReceiver { port, mails, refused, task }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Waits (up to 10 s) for a mail to `to` that `matches`.
    pub async fn wait_for(&self, to: &str, matches: impl Fn(&Mail) -> bool) -> Mail {
        for _ in 0..200 {
            let found = self.mails.lock().unwrap().iter().find(|m| m.to.iter().any(|t| t == to) && matches(m)).cloned();
            if let Some(mail) = found {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no such mail to {to} arrived; received: {:?}", self.mails.lock().unwrap());
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    refused: Arc<Mutex<usize>>,
    transient_failures: usize,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 receiver.test ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-receiver.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&line);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&line));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            let refuse = {
                let mut n = refused.lock().unwrap();
                let refuse = *n < transient_failures;
                if refuse {
                    *n += 1;
                }
                refuse
            };
            if refuse {
                b"451 4.3.0 try again later\r\n"
            } else {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut raw = Vec::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    raw.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
                }
                let (headers, body) = decode(&raw);
                mails.lock().unwrap().push(Mail { from: from.clone(), to: to.clone(), headers, body });
                b"250 OK queued\r\n"
            }
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 OK\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

fn address(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line.rfind('>').unwrap_or(line.len());
    line[start..end].to_string()
}

/// Splits headers from body and undoes the transfer encoding lettre chose.
fn decode(raw: &[String]) -> (String, String) {
    let split = raw.iter().position(|l| l.is_empty()).unwrap_or(raw.len());
    let headers = raw[..split].join("\n");
    let body_lines = &raw[(split + 1).min(raw.len())..];
    let lower = headers.to_ascii_lowercase();
    let body = if lower.contains("content-transfer-encoding: base64") {
        let joined: String = body_lines.concat();
        String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(joined.trim()).unwrap()).into_owned()
    } else if lower.contains("content-transfer-encoding: quoted-printable") {
        let mut bytes = Vec::new();
        for line in body_lines {
            let (text, soft) = match line.strip_suffix('=') {
                Some(t) => (t, true),
                None => (line.as_str(), false),
            };
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if let Some(v) = (b[i] == b'=' && i + 3 <= b.len())
                    .then(|| u8::from_str_radix(&text[i + 1..i + 3], 16).ok())
                    .flatten()
                {
                    bytes.push(v);
                    i += 3;
                    continue;
                }
                bytes.push(b[i]);
                i += 1;
            }
            if !soft {
                bytes.push(b'\n');
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        body_lines.join("\n")
    };
    (headers, body)
}

/// One request as the HTTP listener received it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
    /// The status the listener answered.
    pub answered: u16,
}

/// An HTTP listener that records every request and answers the statuses queued with
/// [`HttpReceiver::answer`], then `200`.
pub struct HttpReceiver {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpReceiver {
    pub async fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let (r, s) = (requests.clone(), statuses.clone());
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    let answered = s.lock().unwrap().pop_front().unwrap_or(200);
                    r.lock().unwrap().push(Captured { path: uri.path().to_string(), headers, body, answered });
                    axum::http::StatusCode::from_u16(answered).unwrap()
                }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpReceiver { base, requests, statuses, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Queues statuses for the next requests.
    pub fn answer(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    /// Waits (up to 10 s) until `n` requests to `path` have arrived; returns them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Captured> {
        for _ in 0..200 {
            let got: Vec<Captured> = self.requests.lock().unwrap().iter().filter(|c| c.path == path).cloned().collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} requests to {path} arrived: {:?}", self.requests.lock().unwrap());
    }

    pub fn received(&self, path: &str) -> Vec<Captured> {
        self.requests.lock().unwrap().iter().filter(|c| c.path == path).cloned().collect()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
