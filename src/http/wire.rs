//! Problem documents for the errors hyper answers itself.
//!
//! hyper refuses a request whose head it cannot parse (a control character in a header, a
//! duplicate `Content-Length`, bytes that are not a URI in the target: `400`; a target over 64 KiB:
//! `414`; a head over its read buffer: `431`) before any service sees it, with a bare response:
//! a status line, `content-length: 0`, a `date`, and no body. hyper 1 has no hook for that answer
//! (its `http1` builder sets limits, not the response), so the connection's writer recognises it and
//! writes a problem document in its place. Every response our router makes carries a
//! `content-type` (errors are problems, see `problem_for_bare_errors`), so an error status line
//! written without one can only be hyper's own. hyper closes the connection after such an answer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections answer hyper's own errors with problem documents.
pub struct ProblemListener(pub TcpListener);

impl axum::serve::Listener for ProblemListener {
    type Io = ProblemIo<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (ProblemIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose writer replaces hyper's bare error answers.
pub struct ProblemIo<T> {
    inner: T,
    /// A replacement still being written; written before anything else.
    pending: Vec<u8>,
}

impl<T> ProblemIo<T> {
    pub fn new(inner: T) -> Self {
        ProblemIo { inner, pending: Vec::new() }
    }
}

/// The problem response that replaces `head`, when `head` is one of hyper's bare error answers: an
/// HTTP/1 status line of 4xx or 5xx, no `content-type`, `content-length: 0`, and nothing after the
/// blank line.
pub fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    let headers: Vec<&str> = text.split("\r\n").skip(1).collect();
    if headers.iter().any(|h| h.starts_with("content-type:")) || !headers.contains(&"content-length: 0") {
        return None;
    }
    let body = super::error::problem_for_status(status).body().to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error"),
        super::error::PROBLEM_JSON,
        body.len()
    );
    for h in head[..end].split(|b| *b == b'\n').skip(1) {
        // Keep hyper's `date`; the rest is ours.
        if h.to_ascii_lowercase().starts_with(b"date:") {
            out.push_str(std::str::from_utf8(h).ok()?.trim_end());
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes what is pending; `Ready(Ok)` once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(problem) = replacement(buf) {
            // The caller's bytes count as written; ours go out first on every later call.
            self.pending = problem;
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        // hyper's bare answer is one slice (a head without a body); anything else passes through.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && let Some(problem) = replacement(only)
        {
            self.pending = problem;
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_error_head_is_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 03:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{out}");
        assert!(out.contains("content-type: application/problem+json\r\n"), "{out}");
        assert!(out.contains("date: Wed, 02 Dec 2026 03:00:00 GMT\r\n"), "{out}");
        let body: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"], 431);
        assert_eq!(body["code"], "headers_too_large");
        // Our own answers: with a content type, a success, a body after the head, or not HTTP at all.
        for head in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"{\"HTTP/1.1 400\"}",
            b"",
        ] {
            assert!(replacement(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
