//! One typed configuration: an optional TOML file, overridden by `OMAMORI_*` environment variables.
//!
//! Every setting has one name (`listen`) used as the TOML key and, upper-cased with the `OMAMORI_`
//! prefix, as the environment variable (`OMAMORI_LISTEN`). A value that does not parse stops start-up
//! with one line naming the setting and where it came from ([`ConfigError`]); `main` exits with
//! status 2. Production refuses sandbox mode and starts only with its keys configured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use ipnet::IpNet;

use crate::secret::Secret;

/// Every setting Omamori reads, in the order the README documents them.
pub const SETTINGS: &[&str] = &[
    "listen",
    "public_url",
    "database_url",
    "database_allow_unverified_tls",
    "data_dir",
    "sandbox",
    "environment",
    "shutdown_drain_secs",
    "metrics_listen",
    "metrics_token",
    "trusted_proxies",
    "geoip",
    "allowed_countries",
    "unknown_country",
    "log_format",
    "log_level",
    "amount_ceiling",
    "database_max_connections",
    "session_idle_timeout_secs",
    "session_absolute_timeout_secs",
    "throttle_address_failures",
    "throttle_subnet_failures",
    "alert_failed_logins_per_minute",
    "alert_failed_codes_per_minute",
    "alert_throttled_addresses_per_minute",
    "alert_card_declines_per_minute",
    "alert_risk_declines_per_minute",
    "containment",
    "containment_policy",
    "password_hash_concurrency",
    "payment_code_prefix",
    "card_fingerprint_key",
    "totp_encryption_key",
    "webhook_signing_key",
    "analytics_key",
    "analytics_min_customers",
    "analytics_cache_mib",
    "smtp_url",
    "smtp_from",
    "sms_gateway_url",
    "sms_gateway_token",
    "oncall_webhook_url",
    "oncall_webhook_token",
    "notify_poll_ms",
    "notify_retry_base_ms",
    "notify_max_attempts",
    "processor_webhook_secret",
    "processor",
    "stripe_secret_key",
    "stripe_publishable_key",
    "stripe_api_base",
    "stripe_js_url",
    "stripe_webhook_secret",
    "stripe_timeout_ms",
    "payout_originator",
];

/// The keys of ARCHITECTURE section 14. Production refuses to start without them; other
/// environments generate missing ones into the data directory.
pub const KEY_SETTINGS: &[&str] =
    &["card_fingerprint_key", "totp_encryption_key", "webhook_signing_key", "analytics_key"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCountry {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A key with an id, so that it can be rotated: configured as `ID:BASE64` (32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    pub bytes: Secret<Vec<u8>>,
}

impl Key {
    pub fn parse(value: &str) -> Result<Self, String> {
        let (id, b64) = value.split_once(':').ok_or("expected ID:BASE64, for example k1:<44 base64 characters>")?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err("the key id must be letters, digits, '-' or '_'".into());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "the key is not valid base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!("the key must be 32 bytes, not {}", bytes.len()));
        }
        Ok(Key { id: id.to_string(), bytes: Secret::new(bytes) })
    }

    pub fn generate(id: &str) -> Self {
        let mut bytes = vec![0u8; 32];
        rand::fill(&mut bytes[..]);
        Key { id: id.to_string(), bytes: Secret::new(bytes) }
    }

    /// The `ID:BASE64` form, for writing a generated key to the data directory.
    pub fn to_setting(&self) -> String {
        format!("{}:{}", self.id, base64::engine::general_purpose::STANDARD.encode(self.bytes.expose()))
    }
}

/// The keys of one purpose, newest first: configured as `ID:BASE64[,OLDID:BASE64...]`. The
/// newest writes (seals, signs, fingerprints); every listed key still reads what was written under
/// its id, so that a key can be rotated without locking anyone out. It derefs to the newest key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    pub fn parse(value: &str) -> Result<Self, String> {
        let keys = split_list(value).map(Key::parse).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("expected ID:BASE64, for example k1:<44 base64 characters>".into());
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(format!("the key id {:?} is listed twice", key.id));
            }
        }
        Ok(KeyRing { keys })
    }

    /// The newest key first, then the older ones that are still read.
    pub fn new(current: Key, older: Vec<Key>) -> Self {
        let mut keys = vec![current];
        keys.extend(older);
        KeyRing { keys }
    }

    /// The key that writes.
    pub fn current(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, to read what was written under it.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, newest first.
    pub fn all(&self) -> &[Key] {
        &self.keys
    }

    pub fn to_setting(&self) -> String {
        self.keys.iter().map(Key::to_setting).collect::<Vec<_>>().join(",")
    }
}

impl From<Key> for KeyRing {
    fn from(key: Key) -> Self {
        KeyRing { keys: vec![key] }
    }
}

impl std::ops::Deref for KeyRing {
    type Target = Key;
    fn deref(&self) -> &Key {
        self.current()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub card_fingerprint: Option<KeyRing>,
    pub totp_encryption: Option<KeyRing>,
    pub webhook_signing: Option<KeyRing>,
    /// Keys the `customer_ref` pseudonyms (HMAC-SHA256 of merchant and user); the newest is used.
    pub analytics: Option<KeyRing>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The address browsers use (`scheme://host[:port]`): the WebAuthn origin and relying-party id.
    /// When unset and listening on a loopback address, `http://localhost:<port>` (see
    /// [`Config::public_url`]).
    pub public_url: Option<String>,
    /// `None` means the SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// Production lets PostgreSQL run without `sslmode=verify-full` only when this is set.
    pub database_allow_unverified_tls: bool,
    pub data_dir: PathBuf,
    pub sandbox: bool,
    pub environment: Environment,
    /// The Zengin originator (`OMAMORI_PAYOUT_ORIGINATOR`):
    /// `company_code,name_kana,bank_code,branch_code,account_type,account_number`; production
    /// requires it, the sandbox uses a demo one.
    pub payout_originator: Option<String>,
    /// How long a stopping server keeps serving with `/readyz` at 503 before it stops accepting.
    pub shutdown_drain_secs: u32,
    /// A second listener that serves only `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// `Authorization: Bearer` token that opens `/metrics` on the main listener (in production the
    /// main listener serves it only with this token).
    pub metrics_token: Option<Secret<String>>,
    pub trusted_proxies: Vec<IpNet>,
    pub geoip: Option<PathBuf>,
    pub allowed_countries: Vec<String>,
    pub unknown_country: UnknownCountry,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The largest amount any single money movement may carry (API.md: default ¥1,000,000).
    pub amount_ceiling_yen: i64,
    pub database_max_connections: u32,
    pub session_idle_timeout_secs: u32,
    pub session_absolute_timeout_secs: u32,
    /// Failed logins per client address, and per /24 or /48 subnet, in 10 minutes.
    pub throttle_address_failures: u32,
    pub throttle_subnet_failures: u32,
    /// Per-minute thresholds of the alert detectors.
    pub alert_failed_logins_per_minute: u32,
    pub alert_failed_codes_per_minute: u32,
    pub alert_throttled_addresses_per_minute: u32,
    pub alert_card_declines_per_minute: u32,
    /// Risk-rule holds and declines in a minute (a wave of fraud attempts).
    pub alert_risk_declines_per_minute: u32,
    /// Whether detectors may engage switches on their own (the master switch of the policy).
    pub containment: bool,
    /// Which detector engages which switch, everywhere, when its alert is raised
    /// (`card_declines=card_linking` by default).
    pub containment_policy: Vec<(String, crate::ids::SwitchName)>,
    /// How many Argon2 computations may run at once (each takes 19 MiB and one core).
    pub password_hash_concurrency: u32,
    /// Omamori's provider prefix at the start of every payment code (2 to 6 digits).
    pub payment_code_prefix: String,
    /// Analytics figures resting on fewer distinct customers are `null` (default 5).
    pub analytics_min_customers: u32,
    /// The most memory, in MiB, that merchants' analytics keep of closed days on this instance
    /// (`merchants::analytics_cache`; 0: none, every answer from SQL).
    pub analytics_cache_mib: u32,
    /// Whether `serve` runs the daily close and the first-visit fold each minute: always in
    /// service; not an environment setting (`bench analytics` turns it off, as its seeded year has
    /// no journal entries to settle).
    pub daily_close: bool,
    pub keys: Keys,
    pub notify: NotifyConfig,
    /// The secret the card processor signs its chargeback reports with (none: the route is off).
    pub processor_webhook_secret: Option<Secret<String>>,
    /// The card processor chosen (`OMAMORI_PROCESSOR`); `None`: the sandbox's in sandbox mode,
    /// none otherwise. See [`Config::processor_kind`].
    pub processor: Option<ProcessorKind>,
    pub stripe: StripeConfig,
}

/// Which card processor serves card linking and top-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// Test numbers only (API.md "Sandbox"); refused in production.
    Sandbox,
    Stripe,
}

/// Stripe's settings. Nothing here is contacted at start: the first card or top-up is the first call.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `sk_...` (or a restricted `rk_...` key); never logged or echoed.
    pub secret_key: Option<Secret<String>>,
    /// `pk_...`: what the wallet gives Stripe.js (public by design).
    pub publishable_key: Option<String>,
    /// Where the API lives, without `/v1`: `https://api.stripe.com` (localstripe in tests).
    pub api_base: String,
    /// Stripe.js, loaded by the wallet; its origin is the one third-party origin the pages' CSP allows.
    pub js_url: String,
    /// The endpoint secret (`whsec_...`) that Stripe signs events with (`Stripe-Signature`).
    pub webhook_secret: Option<Secret<String>>,
    /// How long one call to Stripe may take before it counts as failed.
    pub timeout_ms: u32,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            secret_key: None,
            publishable_key: None,
            api_base: "https://api.stripe.com".into(),
            js_url: "https://js.stripe.com/v3/".into(),
            webhook_secret: None,
            timeout_ms: 10_000,
        }
    }
}

impl StripeConfig {
    /// `scheme://host[:port]` of Stripe.js, for the pages' Content-Security-Policy.
    pub fn js_origin(&self) -> Option<String> {
        let url = url::Url::parse(&self.js_url).ok()?;
        Some(url.origin().ascii_serialization())
    }
}

/// The real channels behind the outbox (ARCHITECTURE section 9). A channel that is not configured
/// is the sandbox's (kept and readable) in sandbox mode; elsewhere its messages fail at once, and
/// production refuses to start without SMTP and the SMS gateway.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `smtp://[user:password@]host[:port]` (or `smtps://`, or `?tls=required`), as lettre reads it.
    pub smtp_url: Option<Secret<String>>,
    pub smtp_from: String,
    /// The gateway's endpoint: each SMS is a `POST {to, body}` of JSON.
    pub sms_gateway_url: Option<String>,
    pub sms_gateway_token: Option<Secret<String>>,
    /// The on-call tool's endpoint: each operator alert is a `POST` of JSON.
    pub oncall_webhook_url: Option<String>,
    pub oncall_webhook_token: Option<Secret<String>>,
    /// How often the dispatcher looks for due messages.
    pub poll_ms: u32,
    /// The first retry's delay; each further one doubles, up to an hour.
    pub retry_base_ms: u32,
    /// Attempts before a message is marked failed.
    pub max_attempts: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp_url: None,
            smtp_from: "Omamori <no-reply@omamori.invalid>".to_string(),
            sms_gateway_url: None,
            sms_gateway_token: None,
            oncall_webhook_url: None,
            oncall_webhook_token: None,
            poll_ms: 1000,
            retry_base_ms: 5000,
            max_attempts: 16,
        }
    }
}

impl NotifyConfig {
    /// Codes, tokens and the SMTP password travel encrypted, and production has real channels for
    /// them, or it does not start.
    fn check_production(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.smtp_url {
            let u = url.expose();
            if !(u.starts_with("smtps://") || u.contains("tls=required") || u.contains("tls=wrapper")) {
                return Err(ConfigError(
                    "invalid setting OMAMORI_SMTP_URL: production requires TLS (smtps://..., or ?tls=required)".into(),
                ));
            }
        }
        for (setting, url) in
            [("sms_gateway_url", &self.sms_gateway_url), ("oncall_webhook_url", &self.oncall_webhook_url)]
        {
            if url.as_deref().is_some_and(|u| !u.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "invalid setting {}: production requires an https:// URL",
                    env_name(setting)
                )));
            }
        }
        for (setting, present) in
            [("smtp_url", self.smtp_url.is_some()), ("sms_gateway_url", self.sms_gateway_url.is_some())]
        {
            if !present {
                return Err(ConfigError(format!(
                    "missing setting {}: production requires real notification channels",
                    env_name(setting)
                )));
            }
        }
        Ok(())
    }
}

/// The detectors whose alerts a containment policy can act on.
pub const DETECTORS: &[&str] =
    &["failed_logins", "failed_codes", "throttled_addresses", "card_declines", "risk_declines"];

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            public_url: None,
            database_url: None,
            database_allow_unverified_tls: false,
            data_dir: PathBuf::from("./omamori-data"),
            sandbox: false,
            environment: Environment::Development,
            payout_originator: None,
            shutdown_drain_secs: 0,
            metrics_listen: None,
            metrics_token: None,
            trusted_proxies: Vec::new(),
            geoip: None,
            allowed_countries: vec!["JP".to_string()],
            unknown_country: UnknownCountry::Allow,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            amount_ceiling_yen: 1_000_000,
            database_max_connections: 16,
            session_idle_timeout_secs: 15 * 60,
            session_absolute_timeout_secs: 12 * 3600,
            throttle_address_failures: 10,
            throttle_subnet_failures: 50,
            alert_failed_logins_per_minute: 30,
            alert_failed_codes_per_minute: 20,
            alert_throttled_addresses_per_minute: 3,
            alert_card_declines_per_minute: 20,
            alert_risk_declines_per_minute: 10,
            containment: true,
            containment_policy: vec![("card_declines".to_string(), crate::ids::SwitchName::CardLinking)],
            // Half the cores: a flood of password checks leaves the other half to the payments.
            password_hash_concurrency: std::thread::available_parallelism().map_or(1, |n| (n.get() as u32 / 2).max(1)),
            payment_code_prefix: "4649".to_string(),
            analytics_min_customers: 5,
            analytics_cache_mib: 256,
            daily_close: true,
            keys: Keys::default(),
            notify: NotifyConfig::default(),
            processor_webhook_secret: None,
            processor: None,
            stripe: StripeConfig::default(),
        }
    }
}

/// A configuration problem, printed as one line; start-up stops with exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a raw setting came from, so that an error names the exact place to fix.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env,
}

#[derive(Debug, Clone)]
struct Raw {
    value: String,
    source: Source,
}

fn env_name(setting: &str) -> String {
    format!("OMAMORI_{}", setting.to_ascii_uppercase())
}

fn describe(setting: &str, source: &Source) -> String {
    match source {
        Source::Env => env_name(setting),
        Source::File(path) => format!("{setting} (in {})", path.display()),
    }
}

impl Config {
    /// Reads the optional TOML file, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Only our own variables are read as text: another program's non-Unicode variable is not
        // our business, but one of ours must be readable.
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("OMAMORI_")) else { continue };
            let value = value
                .into_string()
                .map_err(|_| ConfigError(format!("invalid setting {name}: the value is not valid UTF-8")))?;
            env.push((name.to_string(), value));
        }
        Self::load_from(file, env)
    }

    /// As [`Config::load`], with the environment given explicitly (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError(format!("config file {} is not valid TOML: {}", path.display(), e.message()))
            })?;
            for (key, value) in table {
                let setting = SETTINGS
                    .iter()
                    .find(|s| **s == key)
                    .ok_or_else(|| ConfigError(format!("unknown setting {key} (in {})", path.display())))?;
                let value = toml_scalar(&value).ok_or_else(|| {
                    ConfigError(format!(
                        "invalid setting {key} (in {}): expected a string, number, boolean or list of strings",
                        path.display()
                    ))
                })?;
                raw.insert(setting, Raw { value, source: Source::File(path.to_path_buf()) });
            }
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for name in env.keys().filter(|n| n.starts_with("OMAMORI_") && !n.starts_with("OMAMORI_TEST_")) {
            // A misspelt variable would otherwise be silently ignored.
            if !SETTINGS.iter().any(|s| env_name(s) == *name) {
                return Err(ConfigError(format!("unknown setting {name}")));
            }
        }
        for setting in SETTINGS {
            if let Some(value) = env.get(&env_name(setting)) {
                raw.insert(setting, Raw { value: value.clone(), source: Source::Env });
            }
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: BTreeMap<&'static str, Raw>) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        for (setting, Raw { value, source }) in &raw {
            config
                .set(setting, value.trim())
                .map_err(|why| ConfigError(format!("invalid setting {}: {why}", describe(setting, source))))?;
        }
        config.check_processor()?;
        if config.environment == Environment::Production {
            config.check_production(&raw)?;
        }
        Ok(config)
    }

    /// Parses one setting into its field; the error says why, and the caller names the setting.
    fn set(&mut self, setting: &str, value: &str) -> Result<(), String> {
        for parse in SETTING_GROUPS {
            if parse(self, setting, value)? {
                return Ok(());
            }
        }
        unparsed(setting)
    }

    /// Production's demands beyond the values themselves: no sandbox, its keys configured, and
    /// real notification channels that travel encrypted.
    fn check_production(&self, raw: &BTreeMap<&'static str, Raw>) -> Result<(), ConfigError> {
        if self.sandbox {
            let source = raw.get("sandbox").map(|r| describe("sandbox", &r.source)).unwrap_or_default();
            return Err(ConfigError(format!(
                "invalid setting {source}: production (OMAMORI_ENVIRONMENT=production) refuses sandbox mode"
            )));
        }
        for (setting, present) in [
            ("card_fingerprint_key", self.keys.card_fingerprint.is_some()),
            ("totp_encryption_key", self.keys.totp_encryption.is_some()),
            ("webhook_signing_key", self.keys.webhook_signing.is_some()),
            ("analytics_key", self.keys.analytics.is_some()),
        ] {
            if !present {
                return Err(ConfigError(format!(
                    "missing setting {}: production requires it (ID:BASE64 of 32 random bytes)",
                    env_name(setting)
                )));
            }
        }
        self.check_database_tls(raw)?;
        self.notify.check_production()?;
        if self.processor_kind() != Some(ProcessorKind::Stripe) || self.stripe.webhook_secret.is_none() {
            return Err(ConfigError(
                "missing setting OMAMORI_PROCESSOR: production requires a card processor \
                 (OMAMORI_PROCESSOR=stripe with OMAMORI_STRIPE_SECRET_KEY and OMAMORI_STRIPE_WEBHOOK_SECRET)"
                    .into(),
            ));
        }
        if self.payout_originator.is_none() {
            return Err(ConfigError(
                "missing setting OMAMORI_PAYOUT_ORIGINATOR: production requires the Zengin originator \
                 (company_code,name_kana,bank_code,branch_code,account_type,account_number)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The processor in effect: the one configured, or the sandbox's in sandbox mode.
    pub fn processor_kind(&self) -> Option<ProcessorKind> {
        self.processor.or(self.sandbox.then_some(ProcessorKind::Sandbox))
    }

    /// Stripe needs its secret key (checked again when the adapter is built).
    fn check_processor(&self) -> Result<(), ConfigError> {
        if self.processor == Some(ProcessorKind::Stripe) && self.stripe.secret_key.is_none() {
            return Err(ConfigError(
                "missing setting OMAMORI_STRIPE_SECRET_KEY: OMAMORI_PROCESSOR=stripe requires it".into(),
            ));
        }
        Ok(())
    }

    /// Production talks to PostgreSQL over TLS with the server's certificate and name verified
    /// (`sslmode=verify-full`), unless `database_allow_unverified_tls` says otherwise (a Unix
    /// socket, or a TLS sidecar on the same host).
    fn check_database_tls(&self, raw: &BTreeMap<&'static str, Raw>) -> Result<(), ConfigError> {
        let Some(url) = self.database_url.as_deref().filter(|u| u.starts_with("postgres")) else { return Ok(()) };
        if self.database_allow_unverified_tls {
            return Ok(());
        }
        let verify_full = url::Url::parse(url)
            .map(|u| u.query_pairs().any(|(k, v)| k == "sslmode" && v == "verify-full"))
            .unwrap_or(false);
        if !verify_full {
            let source = raw.get("database_url").map(|r| describe("database_url", &r.source)).unwrap_or_default();
            return Err(ConfigError(format!(
                "invalid setting {source}: production requires TLS with a verified server (?sslmode=verify-full), \
                 or OMAMORI_DATABASE_ALLOW_UNVERIFIED_TLS=true"
            )));
        }
        Ok(())
    }
    /// The database URL in effect: the configured one, or the SQLite file in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("omamori.db").display()),
        }
    }
}

/// Parses the settings of one group into `config`: `Ok(false)` for a setting of another group,
/// otherwise whether the value is taken (the error says why it is refused).
type SetGroup = fn(&mut Config, &str, &str) -> Result<bool, String>;

/// The groups, each knowing its own settings. Every setting of [`SETTINGS`] belongs to exactly one
/// (a unit test checks it).
const SETTING_GROUPS: &[SetGroup] =
    &[set_service, set_logging, set_client_origin, set_limits, set_risk, set_secrets, set_notify, set_processor];

/// `scheme://host[:port]` with `https`, or `http` only for `localhost`; no path, query or user.
/// Kept as browsers write an origin (WebAuthn compares it exactly): lower case, and without the
/// scheme's default port (`https://pay.example:443` is `https://pay.example`).
fn parse_public_url(value: &str) -> Result<String, String> {
    let expected = "expected https://HOST[:PORT] (or http://localhost:PORT), without a path";
    let value = value.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = value.split_once("://").ok_or(expected)?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'));
    let scheme_ok = scheme == "https" || (scheme == "http" && host == "localhost");
    if !host_ok || !scheme_ok || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(expected.into());
    }
    let port = match port.map(|p| p.parse::<u16>()) {
        Some(Ok(0)) | Some(Err(_)) => return Err(expected.into()),
        Some(Ok(443)) if scheme == "https" => None,
        Some(Ok(80)) if scheme == "http" => None,
        Some(Ok(port)) => Some(port),
        None => None,
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

impl Config {
    /// The address browsers use: the setting, or `http://localhost:<port>` when listening on a
    /// loopback address (browsers refuse WebAuthn on an IP-address origin); `None` otherwise.
    /// `port` is the bound port (the setting may say 0).
    pub fn effective_public_url(&self, port: u16) -> Option<String> {
        match &self.public_url {
            Some(url) => Some(url.clone()),
            // As a browser writes the origin: port 80 is http's default, so it is left out.
            None if self.listen.ip().is_loopback() && port == 80 => Some("http://localhost".to_string()),
            None if self.listen.ip().is_loopback() => Some(format!("http://localhost:{port}")),
            None => None,
        }
    }
}

fn unparsed(setting: &str) -> ! {
    unreachable!("setting {setting} is listed in SETTINGS but not parsed")
}

/// Where the service listens, its database, and whether it is a sandbox or production.
fn set_service(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    match setting {
        "listen" => config.listen = value.parse().map_err(|_| "expected HOST:PORT, for example 127.0.0.1:8080")?,
        "public_url" => config.public_url = Some(parse_public_url(value)?),
        "database_url" => {
            if !(value.starts_with("sqlite:") || value.starts_with("postgres://") || value.starts_with("postgresql://"))
            {
                return Err("expected sqlite://PATH or postgres://...".into());
            }
            config.database_url = Some(value.to_string());
        }
        "data_dir" => {
            if value.is_empty() {
                return Err("must not be empty".into());
            }
            config.data_dir = PathBuf::from(value);
        }
        "database_allow_unverified_tls" => config.database_allow_unverified_tls = parse_bool(value)?,
        "sandbox" => config.sandbox = parse_bool(value)?,
        "payout_originator" => {
            if value.split(',').count() != 6 {
                return Err("expected company_code,name_kana,bank_code,branch_code,account_type,account_number".into());
            }
            config.payout_originator = Some(value.to_string());
        }
        "shutdown_drain_secs" => config.shutdown_drain_secs = number(value, 0, 300)?,
        "metrics_listen" => {
            config.metrics_listen = Some(value.parse().map_err(|_| "expected HOST:PORT, for example 127.0.0.1:9100")?)
        }
        "metrics_token" => {
            if value.len() < 16 {
                return Err("must be at least 16 characters".into());
            }
            config.metrics_token = Some(Secret::new(value.to_string()))
        }
        "environment" => {
            config.environment = match value {
                "development" => Environment::Development,
                "production" => Environment::Production,
                _ => return Err("expected development or production".into()),
            }
        }
        "database_max_connections" => {
            config.database_max_connections = value
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or("expected a number from 1 to 1000")?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn set_logging(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    match setting {
        "log_format" => {
            config.log_format = match value {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("expected text or json".into()),
            }
        }
        "log_level" => {
            // tracing-subscriber 0.3.23 panics on some non-ASCII filters (",\u{3000}A=", found by
            // tests/fuzz.rs): filters are printable ASCII, and a panic is caught all the same.
            let bad = "expected a level such as info, or a tracing filter";
            if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(bad.into());
            }
            match std::panic::catch_unwind(|| tracing_subscriber::EnvFilter::try_new(value).is_ok()) {
                Ok(true) => {}
                _ => return Err(bad.into()),
            }
            config.log_level = value.to_string();
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// How a client's address and country are read, and which countries are served.
fn set_client_origin(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    match setting {
        "trusted_proxies" => {
            config.trusted_proxies = split_list(value)
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("{s:?} is not a CIDR such as 10.0.0.0/8"))
                })
                .collect::<Result<_, _>>()?
        }
        "geoip" => {
            if value.is_empty() {
                return Err("must be a path to a .mmdb or CSV file".into());
            }
            config.geoip = Some(PathBuf::from(value));
        }
        "allowed_countries" => {
            let list: Vec<String> = split_list(value).map(str::to_ascii_uppercase).collect();
            if list.is_empty() {
                return Err("list at least one ISO 3166 alpha-2 code, for example JP".into());
            }
            if let Some(bad) = list.iter().find(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase())) {
                return Err(format!("{bad:?} is not an ISO 3166 alpha-2 code"));
            }
            config.allowed_countries = list;
        }
        "unknown_country" => {
            config.unknown_country = match value {
                "allow" => UnknownCountry::Allow,
                "deny" => UnknownCountry::Deny,
                _ => return Err("expected allow or deny".into()),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Amounts, session lifetimes, login throttles, hashing concurrency and the payment code prefix.
fn set_limits(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    match setting {
        "amount_ceiling" => {
            config.amount_ceiling_yen = value
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1_000_000_000_000).contains(n))
                .ok_or("expected a whole number of yen from 1 to 1000000000000")?
        }
        "session_idle_timeout_secs" => config.session_idle_timeout_secs = number(value, 60, 24 * 3600)?,
        "session_absolute_timeout_secs" => config.session_absolute_timeout_secs = number(value, 300, 30 * 24 * 3600)?,
        "throttle_address_failures" => config.throttle_address_failures = number(value, 1, 100_000)?,
        "throttle_subnet_failures" => config.throttle_subnet_failures = number(value, 1, 1_000_000)?,
        "password_hash_concurrency" => config.password_hash_concurrency = number(value, 1, 256)?,
        "analytics_min_customers" => config.analytics_min_customers = number(value, 1, 1_000_000)?,
        "analytics_cache_mib" => config.analytics_cache_mib = number(value, 0, 1_048_576)?,
        "payment_code_prefix" => {
            validate_code_prefix(value)?;
            config.payment_code_prefix = value.to_string();
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The alert detectors' thresholds and what containment may do when they fire.
fn set_risk(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    let per_minute = || number(value, 1, 1_000_000);
    match setting {
        "alert_failed_logins_per_minute" => config.alert_failed_logins_per_minute = per_minute()?,
        "alert_failed_codes_per_minute" => config.alert_failed_codes_per_minute = per_minute()?,
        "alert_throttled_addresses_per_minute" => config.alert_throttled_addresses_per_minute = per_minute()?,
        "alert_card_declines_per_minute" => config.alert_card_declines_per_minute = per_minute()?,
        "alert_risk_declines_per_minute" => config.alert_risk_declines_per_minute = per_minute()?,
        "containment" => config.containment = parse_bool(value)?,
        "containment_policy" => config.containment_policy = containment_policy(value)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `DETECTOR=SWITCH, ...`: which switch each detector engages.
fn containment_policy(value: &str) -> Result<Vec<(String, crate::ids::SwitchName)>, String> {
    split_list(value)
        .map(|pair| {
            let (detector, switch) = pair
                .split_once('=')
                .map(|(d, s)| (d.trim(), s.trim()))
                .ok_or_else(|| format!("{pair:?} is not DETECTOR=SWITCH"))?;
            if !DETECTORS.contains(&detector) {
                return Err(format!("{detector:?} is not a detector ({})", DETECTORS.join(", ")));
            }
            let Some(switch) = crate::ids::SwitchName::parse(switch) else {
                return Err(format!("{switch:?} is not a switch ({})", crate::ids::SwitchName::names()));
            };
            Ok((detector.to_string(), switch))
        })
        .collect()
}

/// The rotating keys and the card processor's webhook secret; no value is ever echoed.
fn set_secrets(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    match setting {
        "card_fingerprint_key" => config.keys.card_fingerprint = Some(KeyRing::parse(value)?),
        "totp_encryption_key" => config.keys.totp_encryption = Some(KeyRing::parse(value)?),
        "webhook_signing_key" => config.keys.webhook_signing = Some(KeyRing::parse(value)?),
        "analytics_key" => config.keys.analytics = Some(KeyRing::parse(value)?),
        "processor_webhook_secret" => {
            if value.len() < 16 {
                return Err("must be at least 16 characters".into());
            }
            config.processor_webhook_secret = Some(Secret::new(value.to_string()));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The card processor and Stripe's settings (keys are never echoed).
fn set_processor(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    let stripe = &mut config.stripe;
    match setting {
        "processor" => {
            config.processor = Some(match value {
                "sandbox" => ProcessorKind::Sandbox,
                "stripe" => ProcessorKind::Stripe,
                _ => return Err("expected sandbox or stripe".into()),
            })
        }
        "stripe_secret_key" => {
            if !(value.starts_with("sk_") || value.starts_with("rk_")) || value.len() < 8 {
                return Err("expected a Stripe secret key (sk_... or rk_...)".into());
            }
            stripe.secret_key = Some(Secret::new(value.to_string()));
        }
        "stripe_publishable_key" => {
            if !value.starts_with("pk_")
                || value.len() < 8
                || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err("expected a Stripe publishable key (pk_...)".into());
            }
            stripe.publishable_key = Some(value.to_string());
        }
        "stripe_api_base" => {
            let url = http_url(value)?;
            if reqwest::Url::parse(&url).map(|u| u.path() != "/" || u.query().is_some()).unwrap_or(true) {
                return Err("expected https://HOST[:PORT] without a path (no /v1)".into());
            }
            stripe.api_base = url.trim_end_matches('/').to_string();
        }
        "stripe_js_url" => stripe.js_url = http_url(value)?,
        "stripe_webhook_secret" => {
            if value.len() < 16 {
                return Err("must be at least 16 characters".into());
            }
            stripe.webhook_secret = Some(Secret::new(value.to_string()));
        }
        "stripe_timeout_ms" => stripe.timeout_ms = number(value, 100, 60_000)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The notification channels and the dispatcher's pace.
fn set_notify(config: &mut Config, setting: &str, value: &str) -> Result<bool, String> {
    let notify = &mut config.notify;
    match setting {
        "smtp_url" => {
            // Never echo the value: it may carry a password.
            if !(value.starts_with("smtp://") || value.starts_with("smtps://")) {
                return Err("expected smtp://[USER:PASSWORD@]HOST[:PORT] or smtps://...".into());
            }
            notify.smtp_url = Some(Secret::new(value.to_string()));
        }
        "smtp_from" => {
            value
                .parse::<lettre::message::Mailbox>()
                .map_err(|_| "expected an address such as Omamori <no-reply@example.jp>")?;
            notify.smtp_from = value.to_string();
        }
        "sms_gateway_url" => notify.sms_gateway_url = Some(http_url(value)?),
        "sms_gateway_token" => notify.sms_gateway_token = Some(Secret::new(value.to_string())),
        "oncall_webhook_url" => notify.oncall_webhook_url = Some(http_url(value)?),
        "oncall_webhook_token" => notify.oncall_webhook_token = Some(Secret::new(value.to_string())),
        "notify_poll_ms" => notify.poll_ms = number(value, 10, 60_000)?,
        "notify_retry_base_ms" => notify.retry_base_ms = number(value, 10, 3_600_000)?,
        "notify_max_attempts" => notify.max_attempts = number(value, 1, 100)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn number(value: &str, min: u32, max: u32) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
}

/// An http(s) URL, with nothing but the scheme checked beyond what reqwest accepts.
fn http_url(value: &str) -> Result<String, String> {
    let ok = (value.starts_with("https://") || value.starts_with("http://")) && reqwest::Url::parse(value).is_ok();
    if !ok {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(value.to_string())
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// TOML values become the same strings an environment variable would carry.
fn toml_scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => {
            items.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().map(|v| v.join(","))
        }
        _ => None,
    }
}

/// Checks a provider prefix from the configuration: 2 to 6 ASCII digits, not starting with 0.
///
/// The guideline's prefixes are short digit strings; a leading 0 is refused because a POS or a
/// spreadsheet that handles the code as a number would drop it and route the code nowhere.
pub fn validate_code_prefix(prefix: &str) -> Result<(), String> {
    if !(2..=6).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("payment code prefix must be 2 to 6 ASCII digits, got {prefix:?}"));
    }
    if prefix.starts_with('0') {
        return Err(format!("payment code prefix must not start with 0, got {prefix:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn key() -> String {
        Key::generate("k1").to_setting()
    }

    #[test]
    fn every_setting_is_parsed_by_exactly_one_group() {
        // A group claims a setting by taking its value or refusing it; any other group passes.
        for setting in SETTINGS {
            let claims = SETTING_GROUPS
                .iter()
                .filter(|parse| !matches!(parse(&mut Config::default(), setting, ""), Ok(false)))
                .count();
            assert_eq!(claims, 1, "{setting} is parsed by {claims} groups");
        }
        assert!(SETTING_GROUPS.iter().all(|parse| parse(&mut Config::default(), "no_such_setting", "x") == Ok(false)));
    }

    #[test]
    fn defaults_match_api_md() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./omamori-data"));
        assert!(!c.sandbox);
        assert_eq!(c.allowed_countries, vec!["JP"]);
        assert_eq!(c.unknown_country, UnknownCountry::Allow);
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.amount_ceiling_yen, 1_000_000);
        assert_eq!(c.effective_database_url(), "sqlite://./omamori-data/omamori.db");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("omamori-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("omamori.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsandbox = true\nallowed_countries = [\"jp\", \"KR\"]\n")
            .unwrap();
        let c = Config::load_from(Some(&file), env(&[("OMAMORI_LISTEN", "127.0.0.1:0")])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert!(c.sandbox);
        assert_eq!(c.allowed_countries, vec!["JP", "KR"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_invalid_value_names_the_setting() {
        let c = Config::load_from(None, env(&[("OMAMORI_PUBLIC_URL", "https://Pay.Example.jp/")])).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://pay.example.jp"));
        assert_eq!(c.effective_public_url(1), Some("https://pay.example.jp".to_string()));
        for bad in ["http://pay.example.jp", "https://10.0.0.1", "https://a.jp/path", "pay.example.jp", "https://"] {
            let err = Config::load_from(None, env(&[("OMAMORI_PUBLIC_URL", bad)])).unwrap_err();
            assert!(err.0.contains("OMAMORI_PUBLIC_URL"), "{bad}: {err}");
        }
        // As browsers write the origin: without the scheme's default port, a port as a number.
        for (given, origin) in [
            ("https://pay.example:443", "https://pay.example"),
            ("https://pay.example:443/", "https://pay.example"),
            ("http://localhost:80", "http://localhost"),
            ("https://pay.example:8443", "https://pay.example:8443"),
            ("https://pay.example:080", "https://pay.example:80"),
            ("http://localhost:0443", "http://localhost:443"),
        ] {
            let c = Config::load_from(None, env(&[("OMAMORI_PUBLIC_URL", given)])).unwrap();
            assert_eq!(c.public_url.as_deref(), Some(origin), "{given}");
        }
        for bad in ["https://pay.example:0", "https://pay.example:65536"] {
            assert!(Config::load_from(None, env(&[("OMAMORI_PUBLIC_URL", bad)])).is_err(), "{bad}");
        }
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.effective_public_url(8080), Some("http://localhost:8080".to_string()));
        assert_eq!(c.effective_public_url(80), Some("http://localhost".to_string()));
        let err = Config::load_from(None, env(&[("OMAMORI_LISTEN", "nonsense")])).unwrap_err();
        assert!(err.0.starts_with("invalid setting OMAMORI_LISTEN:"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_TRUSTED_PROXIES", "10.0.0.0/8, bogus")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_TRUSTED_PROXIES") && err.0.contains("bogus"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_ALLOWED_COUNTRIES", "JPN")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_ALLOWED_COUNTRIES"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_UNKNOWN_COUNTRY", "maybe")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_UNKNOWN_COUNTRY"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_DATABASE_URL"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_CARD_FINGERPRINT_KEY", "k1:c2hvcnQ=")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_CARD_FINGERPRINT_KEY") && err.0.contains("32 bytes"), "{err}");
        assert!(!err.0.contains("c2hvcnQ"), "a key value must never be echoed: {err}");
    }

    #[test]
    fn a_log_filter_that_crashed_the_filter_parser_is_refused() {
        let err = Config::load_from(None, env(&[("OMAMORI_LOG_LEVEL", ",\u{3000}A=")])).unwrap_err();
        assert!(err.0.starts_with("invalid setting OMAMORI_LOG_LEVEL:"), "{err}");
        assert!(Config::load_from(None, env(&[("OMAMORI_LOG_LEVEL", "omamori=debug,sqlx=warn")])).is_ok());
    }

    #[test]
    fn a_misspelt_variable_is_refused() {
        let err = Config::load_from(None, env(&[("OMAMORI_LISTN", "127.0.0.1:1")])).unwrap_err();
        assert_eq!(err.0, "unknown setting OMAMORI_LISTN");
        assert!(Config::load_from(None, env(&[("OMAMORI_TEST_POSTGRES_URL", "x"), ("PATH", "/bin")])).is_ok());
    }

    #[test]
    fn an_unknown_file_setting_is_refused() {
        let dir = std::env::temp_dir().join(format!("omamori-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("omamori.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.0.starts_with("unknown setting lisen"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_refuses_sandbox_and_demands_keys() {
        let err = Config::load_from(None, env(&[("OMAMORI_ENVIRONMENT", "production"), ("OMAMORI_SANDBOX", "true")]))
            .unwrap_err();
        assert!(err.0.contains("OMAMORI_SANDBOX") && err.0.contains("refuses sandbox"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_ENVIRONMENT", "production")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_CARD_FINGERPRINT_KEY"), "{err}");
        let (k1, k2, k3, k4) = (key(), key(), key(), key());
        let mut vars = vec![
            ("OMAMORI_ENVIRONMENT", "production"),
            ("OMAMORI_CARD_FINGERPRINT_KEY", k1.as_str()),
            ("OMAMORI_TOTP_ENCRYPTION_KEY", k2.as_str()),
            ("OMAMORI_WEBHOOK_SIGNING_KEY", k3.as_str()),
            ("OMAMORI_ANALYTICS_KEY", k4.as_str()),
        ];
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("OMAMORI_SMTP_URL") && err.0.contains("notification channels"), "{err}");
        vars.push(("OMAMORI_SMTP_URL", "smtp://mailer:s3cret-pass@mail.example.jp:587"));
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("requires TLS") && !err.0.contains("s3cret"), "{err}");
        vars.pop();
        vars.push(("OMAMORI_SMTP_URL", "smtp://mailer:s3cret-pass@mail.example.jp:587?tls=required"));
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("OMAMORI_SMS_GATEWAY_URL"), "{err}");
        vars.push(("OMAMORI_SMS_GATEWAY_URL", "http://sms.example.jp/send"));
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("OMAMORI_SMS_GATEWAY_URL") && err.0.contains("https"), "{err}");
        vars.pop();
        vars.push(("OMAMORI_SMS_GATEWAY_URL", "https://sms.example.jp/send"));
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("OMAMORI_PROCESSOR") && err.0.contains("card processor"), "{err}");
        vars.push(("OMAMORI_PROCESSOR", "sandbox"));
        assert!(Config::load_from(None, env(&vars)).unwrap_err().0.contains("OMAMORI_PROCESSOR"));
        vars.pop();
        vars.push(("OMAMORI_PROCESSOR", "stripe"));
        let err = Config::load_from(None, env(&vars)).unwrap_err();
        assert!(err.0.contains("OMAMORI_STRIPE_SECRET_KEY"), "{err}");
        vars.push(("OMAMORI_STRIPE_SECRET_KEY", "sk_live_s3cretkey"));
        assert!(Config::load_from(None, env(&vars)).unwrap_err().0.contains("OMAMORI_STRIPE_WEBHOOK_SECRET"));
        vars.push(("OMAMORI_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef"));
        assert!(Config::load_from(None, env(&vars)).unwrap_err().0.contains("OMAMORI_PAYOUT_ORIGINATOR"));
        vars.push(("OMAMORI_PAYOUT_ORIGINATOR", "1234567890,ｵﾏﾓﾘ(ｶ,0001,001,1,1234567"));
        let c = Config::load_from(None, env(&vars)).unwrap();
        assert!(!format!("{:?}", c.stripe).contains("s3cret"), "the Stripe key must not print");
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.keys.card_fingerprint.unwrap().to_setting(), k1);
        assert!(!format!("{:?}", c.notify).contains("s3cret"), "the SMTP password must not print");
    }

    #[test]
    fn production_demands_verified_tls_to_postgres() {
        let (k1, k2, k3, k4) = (key(), key(), key(), key());
        let base = vec![
            ("OMAMORI_ENVIRONMENT", "production"),
            ("OMAMORI_CARD_FINGERPRINT_KEY", k1.as_str()),
            ("OMAMORI_TOTP_ENCRYPTION_KEY", k2.as_str()),
            ("OMAMORI_WEBHOOK_SIGNING_KEY", k3.as_str()),
            ("OMAMORI_ANALYTICS_KEY", k4.as_str()),
            ("OMAMORI_SMTP_URL", "smtps://mail.example.jp"),
            ("OMAMORI_SMS_GATEWAY_URL", "https://sms.example.jp/send"),
            ("OMAMORI_PROCESSOR", "stripe"),
            ("OMAMORI_STRIPE_SECRET_KEY", "sk_live_0123456789"),
            ("OMAMORI_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef"),
            ("OMAMORI_PAYOUT_ORIGINATOR", "1234567890,ｵﾏﾓﾘ(ｶ,0001,001,1,1234567"),
        ];
        let with = |url: &str, allow: Option<&str>| {
            let mut vars = base.clone();
            vars.push(("OMAMORI_DATABASE_URL", url));
            if let Some(allow) = allow {
                vars.push(("OMAMORI_DATABASE_ALLOW_UNVERIFIED_TLS", allow));
            }
            Config::load_from(None, env(&vars))
        };
        for url in [
            "postgres://omamori:pw@db.internal/omamori",
            "postgres://omamori:pw@db.internal/omamori?sslmode=require",
            "postgres://omamori:pw@db.internal/omamori?sslmode=verify-ca",
            "postgres://omamori:pw@db.internal/omamori?application_name=sslmode=verify-full",
        ] {
            let err = with(url, None).unwrap_err();
            assert!(err.0.contains("OMAMORI_DATABASE_URL") && err.0.contains("verify-full"), "{url}: {err}");
            assert!(!err.0.contains("pw@"), "the URL (and its password) is never echoed: {err}");
        }
        assert!(with("postgres://omamori@db.internal/omamori?sslmode=verify-full", None).is_ok());
        assert!(with("postgres://omamori@localhost/omamori", Some("true")).is_ok());
        assert!(with("sqlite:///var/lib/omamori/omamori.db", None).is_ok());
        // Outside production any sslmode goes.
        assert!(Config::load_from(None, env(&[("OMAMORI_DATABASE_URL", "postgres://x@localhost/db")])).is_ok());
    }

    #[test]
    fn a_key_setting_lists_the_newest_key_first() {
        let (new, old) = (Key::generate("k2"), Key::generate("k1"));
        let ring = KeyRing::parse(&format!("{}, {}", new.to_setting(), old.to_setting())).unwrap();
        assert_eq!(ring.current().id, "k2");
        assert_eq!(ring.get("k1").unwrap(), &old);
        assert!(ring.get("k3").is_none());
        assert_eq!(KeyRing::parse(&ring.to_setting()).unwrap(), ring);
        let err = KeyRing::parse(&format!("{},{}", new.to_setting(), new.to_setting())).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(KeyRing::parse("").is_err());
    }

    #[test]
    fn notification_and_containment_settings_are_checked() {
        let err = Config::load_from(None, env(&[("OMAMORI_SMTP_URL", "mail.example.jp:s3cret")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_SMTP_URL") && !err.0.contains("s3cret"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_SMS_GATEWAY_URL", "ftp://x")])).unwrap_err();
        assert!(err.0.contains("OMAMORI_SMS_GATEWAY_URL"), "{err}");
        let err =
            Config::load_from(None, env(&[("OMAMORI_CONTAINMENT_POLICY", "card_declines=everything")])).unwrap_err();
        assert!(err.0.contains("is not a switch"), "{err}");
        let err = Config::load_from(None, env(&[("OMAMORI_CONTAINMENT_POLICY", "vibes=topups")])).unwrap_err();
        assert!(err.0.contains("is not a detector"), "{err}");
        let c = Config::load_from(
            None,
            env(&[("OMAMORI_CONTAINMENT_POLICY", "card_declines=card_linking, risk_declines=topups")]),
        )
        .unwrap();
        assert_eq!(c.containment_policy.len(), 2);
        assert_eq!(c.containment_policy[1], ("risk_declines".to_string(), crate::ids::SwitchName::Topups));
    }
}
