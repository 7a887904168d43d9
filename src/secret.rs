//! Values that must never be printed (keys, tokens, passwords), how Omamori makes and stores its own
//! secrets (random tokens and codes, kept only as hashes), and the masks that personal data wears in
//! logs and answers.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Holds a secret. `Debug` and `Display` print `***`, so a secret that ends up in a log line or an
/// error message by accident shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The only way to read the value; grep for it when auditing.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compares two byte strings in constant time (for the length of the shorter one).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A 256-bit random token, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A 6-digit one-time code from the operating system's CSPRNG-seeded generator.
pub fn new_code() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

/// How a secret is stored: SHA-256 of a context (the owning row's id) and the secret. Tokens are
/// 256-bit random, so a fast hash is enough; the context keeps a code from matching elsewhere.
pub fn secret_hash(context: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(context.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `secret` matches a stored [`secret_hash`], in constant time.
pub fn secret_matches(context: &str, secret: &str, stored: Option<&str>) -> bool {
    let Some(stored) = stored else { return false };
    constant_time_eq(secret_hash(context, secret).as_bytes(), stored.as_bytes())
}

/// Shows only the last 4 digits (for `GET /v1/me` and logs).
pub fn mask_phone(phone: &str) -> String {
    let keep = phone.len().saturating_sub(4);
    format!("{}{}", "*".repeat(keep), &phone[keep..])
}

/// Shows the first character of the local part and the domain.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

/// A bounded pool for slow hashing (Argon2id): `max_concurrent` threads of its own, at the lowest
/// scheduling priority (`nice 19` on Unix), so that hashing uses the cores the payments leave idle
/// and never takes one from them (a login flood slows logins, not payments). A login first takes a
/// place with [`HashPool::admit`]: at most [`QUEUE_PER_PERMIT`] checks per thread may be running or
/// waiting, and a login beyond that is refused before it costs anything.
#[derive(Clone)]
pub struct HashPool {
    jobs: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>,
    places: std::sync::Arc<tokio::sync::Semaphore>,
    runs: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Password checks that may be running or waiting, per hashing thread.
pub const QUEUE_PER_PERMIT: usize = 8;

/// A place in the pool's queue, held until the check it was taken for ends.
pub struct Admitted(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl HashPool {
    /// `max_concurrent` of 0 is taken as 1. The threads end when the last clone of the pool is dropped.
    pub fn new(max_concurrent: usize) -> HashPool {
        let n = max_concurrent.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("omamori-hash-{i}")).spawn(move || {
                lowest_priority();
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a hashing thread");
            }
        }
        HashPool {
            jobs: std::sync::Arc::new(std::sync::Mutex::new(tx)),
            places: std::sync::Arc::new(tokio::sync::Semaphore::new(n * QUEUE_PER_PERMIT)),
            runs: Default::default(),
            threads: n,
        }
    }

    /// A place for one password check, or `None` when the queue is full (the caller refuses the
    /// login at once, before any database work or hashing).
    pub fn admit(&self) -> Option<Admitted> {
        std::sync::Arc::clone(&self.places).try_acquire_owned().ok().map(Admitted)
    }

    /// How many jobs have started since the pool was made (each one Argon2 computation).
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `work` on one of the pool's threads, in arrival order; answers its result. The work
    /// runs to its end even if the caller stops waiting.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let runs = self.runs.clone();
        let job: Job = Box::new(move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("omamori_password_hashes_total").increment(1);
            let _ = done.send(work());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| anyhow::anyhow!("the hashing pool is closed"))?;
        result.await.map_err(|_| anyhow::anyhow!("a hashing task failed"))
    }

    /// How many hashing threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// The calling thread at the lowest priority (on Linux a thread's nice value is its own, and
/// `setpriority(PRIO_PROCESS, 0)` sets the calling thread's).
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::warn!(error = %e, "could not lower a hashing thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2hunter2");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn codes_and_tokens() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, new_token());
        let h = secret_hash("ch_1", "123456");
        assert!(secret_matches("ch_1", "123456", Some(&h)));
        assert!(!secret_matches("ch_2", "123456", Some(&h)));
        assert!(!secret_matches("ch_1", "123457", Some(&h)));
        assert!(!secret_matches("ch_1", "123456", None));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_phone("+819012345678"), "*********5678");
        assert_eq!(mask_email("hanako@example.jp"), "h***@example.jp");
    }
}
