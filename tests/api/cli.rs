//! The `omamori` binary as an operator runs it: configuration errors, the listening line,
//! graceful shutdown, `migrate`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn omamori(data_dir: &TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omamori"));
    cmd.env_clear().env("OMAMORI_DATA_DIR", &data_dir.0).env("OMAMORI_LOG_LEVEL", "warn");
    cmd
}

#[test]
fn an_invalid_setting_stops_start_up_with_one_line_and_status_2() {
    let dir = TempDir::new();
    for (var, value) in [
        ("OMAMORI_LISTEN", "not-an-address"),
        ("OMAMORI_SANDBOX", "perhaps"),
        ("OMAMORI_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("OMAMORI_ALLOWED_COUNTRIES", "Japan"),
        ("OMAMORI_ENVIRONMENT", "staging"),
        ("OMAMORI_DATABASE_URL", "mysql://localhost/x"),
    ] {
        let out = omamori(&dir).arg("serve").env(var, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // A config file: the error names the key and the file.
    let file = dir.0.join("omamori.toml");
    std::fs::write(&file, "listen = 8080\n").unwrap();
    let out = omamori(&dir).args(["--config", file.to_str().unwrap(), "serve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listen (in ") && stderr.contains("omamori.toml"), "{stderr}");
}

#[test]
fn production_refuses_sandbox_and_starts_only_with_its_keys() {
    let dir = TempDir::new();
    let out = omamori(&dir)
        .arg("serve")
        .env("OMAMORI_ENVIRONMENT", "production")
        .env("OMAMORI_SANDBOX", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuses sandbox"));
    // With every key given, the --sandbox flag is refused too.
    let key = omamori::config::Key::generate("k1").to_setting();
    let out = omamori(&dir)
        .args(["serve", "--sandbox"])
        .env("OMAMORI_ENVIRONMENT", "production")
        .env("OMAMORI_CARD_FINGERPRINT_KEY", &key)
        .env("OMAMORI_TOTP_ENCRYPTION_KEY", &key)
        .env("OMAMORI_WEBHOOK_SIGNING_KEY", &key)
        .env("OMAMORI_ANALYTICS_KEY", &key)
        .env("OMAMORI_SMTP_URL", "smtps://127.0.0.1:465")
        .env("OMAMORI_SMS_GATEWAY_URL", "https://sms.example.jp/send")
        .env("OMAMORI_PROCESSOR", "stripe")
        .env("OMAMORI_STRIPE_SECRET_KEY", "sk_live_0123456789")
        .env("OMAMORI_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef")
        .env("OMAMORI_PAYOUT_ORIGINATOR", "1234567890,ｵﾏﾓﾘ(ｶ,0001,001,1,1234567")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuses sandbox"));
    // Without the Zengin originator, production does not start.
    let out = omamori(&dir)
        .arg("serve")
        .env("OMAMORI_ENVIRONMENT", "production")
        .env("OMAMORI_CARD_FINGERPRINT_KEY", &key)
        .env("OMAMORI_TOTP_ENCRYPTION_KEY", &key)
        .env("OMAMORI_WEBHOOK_SIGNING_KEY", &key)
        .env("OMAMORI_ANALYTICS_KEY", &key)
        .env("OMAMORI_SMTP_URL", "smtps://127.0.0.1:465")
        .env("OMAMORI_SMS_GATEWAY_URL", "https://sms.example.jp/send")
        .env("OMAMORI_PROCESSOR", "stripe")
        .env("OMAMORI_STRIPE_SECRET_KEY", "sk_live_0123456789")
        .env("OMAMORI_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMAMORI_PAYOUT_ORIGINATOR"), "{out:?}");
    // With the keys but no real notification channels, production does not start.
    let out = omamori(&dir)
        .arg("serve")
        .env("OMAMORI_ENVIRONMENT", "production")
        .env("OMAMORI_CARD_FINGERPRINT_KEY", &key)
        .env("OMAMORI_TOTP_ENCRYPTION_KEY", &key)
        .env("OMAMORI_WEBHOOK_SIGNING_KEY", &key)
        .env("OMAMORI_ANALYTICS_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMAMORI_SMTP_URL"));
    let out = omamori(&dir).arg("serve").env("OMAMORI_ENVIRONMENT", "production").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMAMORI_CARD_FINGERPRINT_KEY"));
    // With keys and channels but no card processor, production does not start either.
    let out = omamori(&dir)
        .arg("serve")
        .env("OMAMORI_ENVIRONMENT", "production")
        .env("OMAMORI_CARD_FINGERPRINT_KEY", &key)
        .env("OMAMORI_TOTP_ENCRYPTION_KEY", &key)
        .env("OMAMORI_WEBHOOK_SIGNING_KEY", &key)
        .env("OMAMORI_ANALYTICS_KEY", &key)
        .env("OMAMORI_SMTP_URL", "smtps://127.0.0.1:465")
        .env("OMAMORI_SMS_GATEWAY_URL", "https://sms.example.jp/send")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMAMORI_PROCESSOR"), "{out:?}");
}

/// Starts `omamori serve` on a free port and returns it with the address it printed.
fn start(dir: &TempDir, extra: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = omamori(dir);
    cmd.args(["serve", "--sandbox"]).env("OMAMORI_LISTEN", "127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "the server did not stop within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_prints_its_address_and_finishes_requests_in_flight_on_sigterm() {
    let dir = TempDir::new();
    let (mut child, addr) = start(&dir, &[]);
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    assert!(dir.0.join("omamori.db").exists(), "the SQLite file is created on first start");
    assert!(dir.0.join("sandbox.json").exists());

    // Begin a request and leave it half-sent, so that it is in flight when SIGTERM arrives.
    let body = br#"{"advance_seconds": 0}"#;
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(stream, "POST /v1/sandbox/clock HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    stream.write_all(&body[..5]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer taken...
    assert!(child.try_wait().unwrap().is_none(), "the server quit with a request in flight");
    // ...but the one in flight completes.
    stream.write_all(&body[5..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"now\""), "{response}");
    let status = wait(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn logs_are_json_when_asked() {
    let dir = TempDir::new();
    let (mut child, addr) = start(&dir, &[("OMAMORI_LOG_FORMAT", "json"), ("OMAMORI_LOG_LEVEL", "info")]);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    sigterm(&child);
    wait(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(stderr.contains("omamori is serving"), "{stderr}");
}

#[test]
fn migrate_creates_the_schema_once() {
    let dir = TempDir::new();
    let out = omamori(&dir).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19]")
    );
    let out = omamori(&dir).arg("migrate").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    let out = omamori(&dir).args(["admin", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn migrate_on_postgres() {
    let Some(admin) = postgres_url() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = TempDir::new();
    let db = rt.block_on(TestDatabase::create(Backend::Postgres, &dir)).unwrap();
    let _ = admin;
    for expected in ["applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19]", "up to date"]
    {
        let out = omamori(&dir).arg("migrate").env("OMAMORI_DATABASE_URL", &db.url).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(expected));
    }
    drop(db);
}
