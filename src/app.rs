//! Start-up: the shared state every request sees, and the [`Application`] that binds, serves and
//! shuts down gracefully. `omamori serve` and the test harness both start the service this way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, Environment, Key, KeyRing};
pub use crate::state::AppState;
use crate::store::{self, Clock, Db};

/// Everything but the socket: the data directory and keys, the database (migrated), the clock,
/// the risk rules' defaults, the country data and the password hashing pool. Command-line tools use
/// this too.
pub async fn state(mut config: Config) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    load_or_generate_keys(&mut config)?;
    let db = Db::connect(&config.effective_database_url(), config.database_max_connections).await?;
    store::migrate::run(&db).await?;
    let clock = Clock::load(&db).await?;
    crate::risk::rules::seed(&db, clock.now_ms()).await?;
    crate::merchants::ensure_account_shards(&db, clock.now_ms()).await?;
    let geo = crate::ports::geo::GeoIp::load(config.geoip.as_deref())?;
    let hasher = crate::secret::HashPool::new(config.password_hash_concurrency as usize);
    let processor = processor(&config)?;
    Ok(AppState {
        db,
        config: Arc::new(config),
        clock,
        metrics: crate::http::metrics_handle(),
        hasher,
        geo: Arc::new(geo),
        processor,
        draining: Default::default(),
    })
}

/// The card processor configured (`OMAMORI_PROCESSOR`): Stripe, the sandbox's (the default in
/// sandbox mode), or none. Building it contacts nobody.
fn processor(config: &Config) -> anyhow::Result<Option<Arc<dyn crate::ports::processor::CardProcessor>>> {
    use crate::config::ProcessorKind;
    Ok(match config.processor_kind() {
        Some(ProcessorKind::Stripe) => Some(Arc::new(crate::payments::stripe::StripeProcessor::new(&config.stripe)?)),
        Some(ProcessorKind::Sandbox) => Some(Arc::new(crate::payments::processor::SandboxProcessor::default())),
        None => None,
    })
}

pub struct Application {
    listener: TcpListener,
    /// `OMAMORI_METRICS_LISTEN`: a second listener that serves only `/metrics`.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    router: axum::Router,
    background: AbortOnDrop,
}

impl Application {
    /// Connects to the database, applies migrations, prepares sandbox data and binds the socket.
    pub async fn build(mut config: Config) -> anyhow::Result<Application> {
        let listen = config.listen;
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        // Fixed once the port is known (`127.0.0.1:0` picks one).
        config.public_url = config.effective_public_url(listener.local_addr()?.port());
        let state = state(config).await?;
        let (db, clock) = (state.db.clone(), state.clock.clone());
        let channels = crate::notify::dispatch::Channels::from_config(
            &state.config,
            Arc::new(crate::merchants::webhooks::Directory { key: state.config.keys.webhook_signing.clone() }),
        )?;
        let mut background = vec![
            spawn_janitor(state.clone()),
            spawn_sweeper(state.clone()),
            crate::notify::dispatch::spawn(state.clone(), channels),
            spawn_detectors(state.clone()),
            crate::store::cache::spawn_poller(db.clone()),
        ];
        if state.config.daily_close {
            background.push(crate::merchants::settlement::spawn_daily_close(db.clone(), clock.clone()));
        }
        if state.config.sandbox {
            background.push(clock.spawn_refresh(db.clone()));
            let addr = listener.local_addr()?;
            crate::sandbox::prepare(&state, addr).await.context("cannot prepare sandbox data")?;
        }
        let metrics_listener = match state.config.metrics_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?)
            }
            None => None,
        };
        let router = crate::http::router(state.clone());
        Ok(Application { listener, metrics_listener, state, router, background: AbortOnDrop(background) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` is served on its own, when `OMAMORI_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, drains for `OMAMORI_SHUTDOWN_DRAIN_SECS` (still serving,
    /// with `/readyz` answering 503), then lets in-flight requests finish (for at most
    /// [`SHUTDOWN_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, metrics_listener, state, router, background } = self;
        // Background tasks stop with the server, even if this future is dropped rather than finished.
        let _background = background;
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let (draining, drain) = (state.draining.clone(), Duration::from_secs(state.config.shutdown_drain_secs.into()));
        let signal = async move {
            shutdown.await;
            draining.start();
            tracing::info!(drain_secs = drain.as_secs(), "draining: /readyz answers 503");
            tokio::time::sleep(drain).await;
            let _ = stopping_tx.send(true);
        };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // hyper's own answers to requests it cannot parse become problem documents (`http::wire`).
        let listener = axum::serve::ListenerExt::tap_io(crate::http::wire::ProblemListener(listener), |_| {});
        let server = axum::serve(listener, service).with_graceful_shutdown(signal);
        let metrics = metrics_listener.map(|l| {
            let mut stopped = stopping_rx.clone();
            let router = crate::http::metrics_router(state.clone());
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|stopping| *stopping).await;
                };
                if let Err(e) = axum::serve(l, router).with_graceful_shutdown(stop).await {
                    tracing::warn!(error = %e, "the metrics listener stopped");
                }
            })
        });
        let _metrics = AbortOnDrop(metrics.into_iter().collect());
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
            let registrations = async {
                let mut conn = state.db.pool().acquire().await?;
                crate::identity::passkey::purge_registrations(&mut conn, None, state.clock.now_ms()).await
            };
            if let Err(e) = registrations.await {
                tracing::warn!(error = %crate::store::describe_error(&e), "could not purge old passkey registrations");
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
                crate::risk::alerts::evaluate(
                    &mut tx,
                    &crate::risk::alerts::Thresholds::from_config(&state.config),
                    state.clock.now_ms(),
                )
                .await?;
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
                Err(e) => {
                    // A database error can carry connection details: the log gets its description.
                    let error = match &e {
                        crate::payments::PaymentsError::Db(db) => crate::store::describe_error(db),
                        other => other.to_string(),
                    };
                    tracing::warn!(error = %error, "could not sweep pending top-ups")
                }
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
    let slots: [(&str, &mut Option<KeyRing>); 4] = [
        ("card_fingerprint_key", &mut config.keys.card_fingerprint),
        ("totp_encryption_key", &mut config.keys.totp_encryption),
        ("webhook_signing_key", &mut config.keys.webhook_signing),
        ("analytics_key", &mut config.keys.analytics),
    ];
    for (name, slot) in slots {
        if slot.is_some() {
            continue;
        }
        let key = match stored.get(name).and_then(|v| v.as_str()) {
            Some(text) => KeyRing::parse(text).map_err(|e| anyhow::anyhow!("{name} in {}: {e}", path.display()))?,
            None => {
                let key = Key::generate("dev1");
                stored.insert(name.to_string(), toml::Value::String(key.to_setting()));
                changed = true;
                KeyRing::from(key)
            }
        };
        *slot = Some(key);
    }
    if changed {
        crate::store::write_private(&path, &toml::to_string(&stored)?)?;
        tracing::info!(path = %path.display(), "generated development keys");
    }
    Ok(())
}
