//! Start-up: the shared state every request sees, and the [`Application`] that binds, serves and
//! shuts down gracefully. `omamori serve` and the test harness both start the service this way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, Environment, Key};
use crate::store::{self, Clock, Db};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub hasher: crate::identity::password::Hasher,
    pub geo: Arc<crate::risk::geo::GeoIp>,
    /// The card processor; the sandbox one in sandbox mode, none otherwise until a real one is
    /// configured (card linking and top-ups then answer 503).
    pub processor: Option<Arc<dyn crate::payments::processor::CardProcessor>>,
}

impl AppState {
    /// Everything but the socket: the data directory and keys, the database (migrated), the
    /// clock, the country data and the password hasher. Command-line tools use this too.
    pub async fn build(mut config: Config) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        load_or_generate_keys(&mut config)?;
        let db = Db::connect(&config.effective_database_url(), config.database_max_connections).await?;
        store::migrate::run(&db).await?;
        let clock = Clock::load(&db).await?;
        crate::risk::rules::seed(&db, clock.now_ms()).await?;
        let geo = crate::risk::geo::GeoIp::load(config.geoip.as_deref())?;
        let hasher = crate::identity::password::Hasher::new(config.password_hash_concurrency as usize);
        let config_sandbox = config.sandbox;
        Ok(AppState {
            db,
            config: Arc::new(config),
            clock,
            metrics: crate::http::metrics_handle(),
            hasher,
            geo: Arc::new(geo),
            processor: config_sandbox.then(|| {
                Arc::new(crate::payments::processor::SandboxProcessor::default())
                    as Arc<dyn crate::payments::processor::CardProcessor>
            }),
        })
    }

    pub fn session_timeouts(&self) -> crate::identity::session::Timeouts {
        crate::identity::session::Timeouts {
            idle_ms: self.config.session_idle_timeout_secs as i64 * 1000,
            absolute_ms: self.config.session_absolute_timeout_secs as i64 * 1000,
        }
    }

    pub fn throttle_limits(&self) -> crate::risk::throttle::Limits {
        crate::risk::throttle::Limits {
            per_address: self.config.throttle_address_failures as i64,
            per_subnet: self.config.throttle_subnet_failures as i64,
        }
    }

    pub fn alert_thresholds(&self) -> crate::risk::alerts::Thresholds {
        crate::risk::alerts::Thresholds {
            failed_logins: self.config.alert_failed_logins_per_minute as i64,
            failed_codes: self.config.alert_failed_codes_per_minute as i64,
            throttled_addresses: self.config.alert_throttled_addresses_per_minute as i64,
            card_declines: self.config.alert_card_declines_per_minute as i64,
            risk_declines: self.config.alert_risk_declines_per_minute as i64,
            contain: self.config.containment,
            policy: self.config.containment_policy.clone(),
        }
    }

    /// The country policy of shopper routes (`403 region_blocked`).
    pub fn check_country(&self, client: &crate::http::auth::ClientInfo) -> Result<(), crate::http::ApiError> {
        crate::http::auth::country_policy(self, client)
    }
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    router: axum::Router,
    background: AbortOnDrop,
}

impl Application {
    /// Connects to the database, applies migrations, prepares sandbox data and binds the socket.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listen = config.listen;
        let state = AppState::build(config).await?;
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let (db, clock) = (state.db.clone(), state.clock.clone());
        let channels = crate::notify::dispatch::Channels::from_config(&state.config)?;
        let mut background = vec![
            spawn_janitor(state.clone()),
            spawn_sweeper(state.clone()),
            crate::notify::dispatch::spawn(state.clone(), channels),
            spawn_detectors(state.clone()),
        ];
        if state.config.sandbox {
            background.push(clock.spawn_refresh(db.clone()));
            let addr = listener.local_addr()?;
            crate::sandbox::prepare(&state, addr).await.context("cannot prepare sandbox data")?;
        }
        let router = crate::http::router(state.clone());
        Ok(Application { listener, state, router, background: AbortOnDrop(background) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish (for at most
    /// [`SHUTDOWN_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, router, background } = self;
        // Background tasks stop with the server, even if this future is dropped rather than finished.
        let _background = background;
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(signal);
        let deadline = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            result = server => result.context("the server stopped with an error"),
            () = deadline => {
                tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "requests still running after the grace period; stopping anyway");
                Ok(())
            }
        };
        state.db.close().await;
        result
    }
}

/// How long a stopping server waits for requests in flight (longer than any request may run).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(35);

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Housekeeping that needs no coordination between instances: each delete is idempotent.
fn spawn_janitor(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tick.tick().await;
            match crate::idempotency::purge_expired(&state.db, state.clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged expired idempotency keys"),
                Err(e) => {
                    tracing::warn!(error = %crate::store::describe_error(&e), "could not purge expired idempotency keys")
                }
            }
            let purged = async {
                let mut tx = state.db.begin().await?;
                let n = crate::risk::throttle::purge(&mut tx, state.clock.now_ms()).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(n)
            };
            if let Err(e) = purged.await {
                tracing::warn!(error = %crate::store::describe_error(&e), "could not purge old authentication events");
            }
            // The audit chain's head leaves the database every hour, where the on-call tool keeps it.
            if state.config.notify.oncall_webhook_url.is_some()
                && let Err(e) = crate::audit::publish_anchor(&state.db, state.clock.now_ms()).await
            {
                tracing::warn!(error = %crate::store::describe_error(&e), "could not publish the audit anchor");
            }
        }
    })
}

/// Runs the alert detectors every few seconds, whatever requests arrive (raising is idempotent
/// within a quiet period, so every instance may run them).
fn spawn_detectors(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::risk::alerts::DETECTOR_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let run = crate::store::retry(|| async {
                let mut tx = state.db.begin().await?;
                crate::risk::alerts::evaluate(&mut tx, &state.alert_thresholds(), state.clock.now_ms()).await?;
                tx.commit().await
            });
            if let Err(e) = run.await {
                tracing::warn!(error = %crate::store::describe_error(&e), "the detectors could not run");
            }
        }
    })
}

/// Settles top-ups that a crash left pending (every 30 s; settling is idempotent, so several
/// instances may sweep at once).
fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            match crate::payments::topups::sweep(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "settled pending top-ups"),
                Err(e) => tracing::warn!(error = %e.detail, "could not sweep pending top-ups"),
            }
        }
    })
}

/// Outside production, keys that are not configured are generated once into
/// `DATA_DIR/keys.toml` (readable only by the owner) and read from there afterwards, so that
/// fingerprints and encrypted seeds survive a restart. Production refuses to start without them
/// (checked when the configuration is loaded).
fn load_or_generate_keys(config: &mut Config) -> anyhow::Result<()> {
    if config.environment == Environment::Production {
        return Ok(());
    }
    let path = config.data_dir.join("keys.toml");
    let mut stored: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut changed = false;
    let slots: [(&str, &mut Option<Key>); 3] = [
        ("card_fingerprint_key", &mut config.keys.card_fingerprint),
        ("totp_encryption_key", &mut config.keys.totp_encryption),
        ("webhook_signing_key", &mut config.keys.webhook_signing),
    ];
    for (name, slot) in slots {
        if slot.is_some() {
            continue;
        }
        let key = match stored.get(name).and_then(|v| v.as_str()) {
            Some(text) => Key::parse(text).map_err(|e| anyhow::anyhow!("{name} in {}: {e}", path.display()))?,
            None => {
                let key = Key::generate("dev1");
                stored.insert(name.to_string(), toml::Value::String(key.to_setting()));
                changed = true;
                key
            }
        };
        *slot = Some(key);
    }
    if changed {
        write_private(&path, &toml::to_string(&stored)?)?;
        tracing::info!(path = %path.display(), "generated development keys");
    }
    Ok(())
}

/// Writes a file that only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file could carry wider permissions than the mode given at creation.
    let _ = std::fs::remove_file(&tmp);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
