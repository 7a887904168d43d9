//! The command line: `omamori serve`, `omamori migrate`, `omamori admin ...`, `omamori bench ...`.
//!
//! Exit status: 0 success, 1 a failure at run time (or `admin verify` finding a discrepancy),
//! 2 a usage or configuration error (one line on stderr naming the setting).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "omamori", version, about = "Omamori: smartphone payments in yen")]
struct Cli {
    /// A TOML configuration file; OMAMORI_* environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP service until SIGTERM or SIGINT.
    Serve {
        /// Sandbox mode (same as OMAMORI_SANDBOX=true): demo data, test cards, readable messages.
        #[arg(long)]
        sandbox: bool,
    },
    /// Applies the database migrations and exits.
    Migrate,
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Measures throughput (not a test: prints figures and the machine they were taken on).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Recomputes every balance from the postings and checks every settlement; exits 1 naming any
    /// account or settlement that disagrees.
    Verify,
    /// Closes one Asia/Tokyo day into settlements (idempotent: a repeat changes nothing and exits 0;
    /// a day not yet ended by the service clock is refused).
    Settle {
        /// The day, `YYYY-MM-DD` in Asia/Tokyo.
        #[arg(long)]
        date: String,
    },
    /// Operator accounts.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// People of a merchant who log in to the dashboard (/merchant).
    MerchantUser {
        #[command(subcommand)]
        command: MerchantUserCommand,
    },
    /// Stores of a merchant.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// POS terminals and their keys.
    Terminal {
        #[command(subcommand)]
        command: TerminalCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Kill switches, from a shell in an emergency (a release always takes two operators in the console).
    Switch {
        #[command(subcommand)]
        command: SwitchCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walks the hash chain; exits 1 naming the first entry that does not hold, or when the
    /// anchored entry (a head published earlier) is gone or changed.
    Verify {
        /// `ID:HASH` of a head published earlier (`GET /v1/admin/audit/head`, or the hourly
        /// `audit_anchor` message to the on-call webhook).
        #[arg(long)]
        anchor: Option<String>,
    },
}

#[derive(Subcommand)]
enum SwitchCommand {
    /// Engages a switch at once.
    Engage {
        /// signups, logins, card_linking, topups, payments or refunds
        #[arg(long)]
        name: String,
        /// global (default), merchant, user, card or country
        #[arg(long, default_value = "global")]
        scope_kind: String,
        #[arg(long, default_value = "")]
        scope_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Lists the switches in force.
    List,
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Creates a merchant and prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// ISO 18245 merchant category code (four digits).
        #[arg(long)]
        category: String,
    },
}

#[derive(Subcommand)]
enum MerchantUserCommand {
    /// Creates an owner or a staff member and prints the password and authenticator seed once.
    Create {
        /// The merchant (`mer_...`).
        #[arg(long)]
        merchant: crate::ids::MerchantId,
        #[arg(long)]
        email: String,
        /// `owner` (every store, the staff, the bank account) or `staff`.
        #[arg(long, default_value = "owner")]
        role: String,
        /// A store a staff member sees (repeat for several; at least one for staff).
        #[arg(long = "store")]
        stores: Vec<crate::ids::StoreId>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Creates a store and prints its id and QR payload.
    Create {
        #[arg(long)]
        merchant: crate::ids::MerchantId,
        #[arg(long)]
        name: String,
        #[arg(long)]
        city: String,
        #[arg(long)]
        postal_code: Option<String>,
        /// Overrides the merchant's category.
        #[arg(long)]
        category: Option<String>,
    },
}

#[derive(Subcommand)]
enum TerminalCommand {
    /// Issues a terminal key for a store and prints it, once.
    Create {
        #[arg(long)]
        store: crate::ids::StoreId,
    },
    /// Revokes a terminal key at once.
    Revoke {
        #[arg(long)]
        terminal: crate::ids::TerminalId,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Creates an operator and prints their password and TOTP secret, once.
    Create {
        #[arg(long)]
        email: String,
        /// viewer, operator or admin
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ledger transfers per second, one journal entry per transaction.
    Ledger {
        /// Where to run; defaults to a fresh SQLite file in a temporary folder. Point it at a
        /// scratch database: the benchmark creates its own accounts there.
        #[arg(long)]
        database_url: Option<String>,
        /// How many transfers to make.
        #[arg(long, default_value_t = 5000)]
        transfers: u64,
        /// How many transfers run at once.
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
        /// How many wallets the transfers move money between.
        #[arg(long, default_value_t = 100)]
        wallets: u64,
    },
    /// POS payments per second over HTTP (codes charged at the demo store's terminal).
    Pos {
        /// Where to run; defaults to a fresh SQLite file in a temporary folder. Point it at a
        /// scratch database: the benchmark creates its own shoppers there.
        #[arg(long)]
        database_url: Option<String>,
        /// How many payments to make (closed loop).
        #[arg(long, default_value_t = 2000)]
        payments: u64,
        /// How many payments run at once (closed loop).
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
        /// Open loop instead: payments arrive at this many per second, whatever the answers take.
        #[arg(long, requires = "duration")]
        rate: Option<u64>,
        /// How long the open-loop arrivals last, in seconds.
        #[arg(long, requires = "rate")]
        duration: Option<u64>,
    },
    /// Latency of the merchant analytics routes over a seeded year of one merchant's business.
    Analytics {
        /// Where to run: a PostgreSQL server's URL (the bench creates a scratch database there and
        /// drops it); defaults to a fresh SQLite file in a temporary folder.
        #[arg(long)]
        database_url: Option<String>,
        /// How many payments to seed, spread over the last 365 days.
        #[arg(long, default_value_t = 1_000_000)]
        payments: u64,
        /// How many stores the merchant has.
        #[arg(long, default_value_t = 20)]
        stores: u64,
        /// How many distinct customers pay.
        #[arg(long, default_value_t = 50_000)]
        customers: u64,
        /// How many items the stores sell.
        #[arg(long, default_value_t = 2_000)]
        items: u64,
        /// Warm requests per route, after the first (timed apart, on an empty cache).
        #[arg(long, default_value_t = 20)]
        requests: u64,
    },
    /// POS payments at a fixed rate, alone and then under a credential-stuffing flood of ten times
    /// the password checks this machine can do, from many addresses.
    Flood {
        /// Where to run; defaults to a fresh SQLite file in a temporary folder. Point it at a
        /// scratch database: the benchmark creates its own shoppers there.
        #[arg(long)]
        database_url: Option<String>,
        /// Payments per second, in both phases.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds of each phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// How many addresses the flood comes from.
        #[arg(long, default_value_t = 1000)]
        addresses: u64,
    },
    /// How fast a kill switch reaches every instance: several servers on one PostgreSQL database,
    /// paying meanwhile; a `payments` switch engaged through the first, then released, timed until
    /// every other instance refuses (then accepts) its next payment.
    Switch {
        /// A PostgreSQL server's URL (the bench creates a scratch database there and drops it).
        #[arg(long)]
        database_url: String,
        /// How many instances share the database.
        #[arg(long, default_value_t = 3)]
        instances: u64,
        /// How many times the switch is engaged and released.
        #[arg(long, default_value_t = 20)]
        trials: u64,
    },
    /// The TPC-B transaction of pgbench on bare SQLite (WAL, synchronous = FULL, one connection):
    /// the baseline `bench pos` on SQLite is compared with (bench/compare.sh runs both).
    Tpcb {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// Signed merchant webhook deliveries per second, to a local receiver that verifies them.
    Webhooks {
        /// Where to run; defaults to a fresh SQLite file in a temporary folder.
        #[arg(long)]
        database_url: Option<String>,
        /// How many events to deliver.
        #[arg(long, default_value_t = 2000)]
        events: u64,
    },
    /// Password checks per second (Argon2id, as configured) and HTTP login latency.
    Login {
        /// How many logins (first step: password checked, challenge answered) to time.
        #[arg(long, default_value_t = 200)]
        logins: u64,
        /// How many logins run at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
        /// How many bare password verifications to time for the checks-per-second figure.
        #[arg(long, default_value_t = 200)]
        checks: u64,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("omamori: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve { sandbox: true } = cli.command {
        if config.environment == crate::config::Environment::Production {
            eprintln!(
                "omamori: invalid setting --sandbox: production (OMAMORI_ENVIRONMENT=production) refuses sandbox mode"
            );
            return ExitCode::from(2);
        }
        config.sandbox = true;
    }
    init_logging(&config);
    quiet_panics();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omamori: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Admin { command: AdminCommand::Verify } => verify(config).await,
            Command::Admin { command: AdminCommand::Settle { date } } => settle(config, &date).await,
            Command::Admin { command: AdminCommand::Operator { command: OperatorCommand::Create { email, role } } } => {
                create_operator(config, &email, &role).await
            }
            Command::Admin { command: AdminCommand::Merchant { command } } => merchant_command(config, command).await,
            Command::Admin { command: AdminCommand::MerchantUser { command } } => {
                merchant_user_command(config, command).await
            }
            Command::Admin { command: AdminCommand::Store { command } } => store_command(config, command).await,
            Command::Admin { command: AdminCommand::Terminal { command } } => terminal_command(config, command).await,
            Command::Admin { command: AdminCommand::Switch { command } } => switch_command(config, command).await,
            Command::Admin { command: AdminCommand::Audit { command: AuditCommand::Verify { anchor } } } => {
                audit_verify(config, anchor).await
            }
            Command::Bench { command } => bench(config, command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omamori: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A panic message can hold request data (a card number in a debug string, say): log where it
/// happened, never what it said. The request still gets its 500 problem from the HTTP layer.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(at = %at, "panic (message withheld from the log)");
    }));
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let sandbox = config.sandbox;
    let app = crate::app::Application::build(config).await?;
    let addr = app.local_addr();
    println!("listening on http://{addr}");
    tracing::info!(%addr, sandbox, backend = app.state().db.backend().name(), "omamori is serving");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn connect(config: &Config) -> anyhow::Result<crate::store::Db> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    crate::store::Db::connect(&config.effective_database_url(), config.database_max_connections).await
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let db = connect(&config).await?;
    let applied = crate::store::migrate::run(&db).await?;
    if applied.is_empty() {
        println!("the {} database is up to date", db.backend().name());
    } else {
        println!("applied migrations {applied:?} to the {} database", db.backend().name());
    }
    Ok(ExitCode::SUCCESS)
}

async fn create_operator(config: Config, email: &str, role: &str) -> anyhow::Result<ExitCode> {
    let role = crate::identity::operators::Role::parse(role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?;
    let state = crate::app::state(config).await?;
    let created = crate::identity::operators::create(&state, email, role).await?;
    println!("operator {} created with role {}", created.email, created.role.as_str());
    println!("password: {}", created.password);
    println!("TOTP secret (add it to an authenticator app now; it is not shown again): {}", created.totp_secret);
    println!(
        "otpauth URI: {}",
        crate::identity::totp::otpauth_uri(
            &crate::identity::totp::base32_decode(&created.totp_secret).unwrap_or_default(),
            &created.email
        )
    );
    state.db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Who acts from the command line, for the audit log.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// A service error as one line for the terminal.
fn cli_error(e: impl Into<crate::http::ApiError>) -> anyhow::Error {
    let e = e.into();
    anyhow::anyhow!("{} ({})", e.detail, e.code)
}

async fn merchant_command(config: Config, command: MerchantCommand) -> anyhow::Result<ExitCode> {
    let state = crate::app::state(config).await?;
    let MerchantCommand::Create { name, category } = command;
    let id = crate::merchants::create_merchant(&state.db, &name, &category, &cli_actor(), state.clock.now_ms())
        .await
        .map_err(cli_error)?;
    println!("merchant_id: {id}");
    state.db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn merchant_user_command(config: Config, command: MerchantUserCommand) -> anyhow::Result<ExitCode> {
    use crate::identity::staff::{NewStaff, StaffRole};
    let MerchantUserCommand::Create { merchant, email, role, stores } = command;
    let role = match role.as_str() {
        "owner" => StaffRole::Owner,
        "staff" => StaffRole::Staff,
        other => anyhow::bail!("--role is owner or staff, not {other:?}"),
    };
    let state = crate::app::state(config).await?;
    let new = NewStaff { email: &email, role, store_ids: &stores };
    let created = crate::identity::staff::create(&state, &merchant, &new, &cli_actor()).await.map_err(cli_error)?;
    println!("user_id: {}", created.user_id);
    println!("email: {}", created.email);
    println!("role: {}", created.role.as_str());
    println!("password: {}", created.password);
    println!("totp_secret: {}", created.totp_secret);
    println!("otpauth_uri: {}", created.otpauth_uri);
    println!("(shown once: hand them over in person)");
    state.db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `omamori bench ...`: each benchmark prints what it measured, on which machine.
async fn bench(config: Config, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        command @ BenchCommand::Pos { .. } => bench_pos(config, command).await,
        BenchCommand::Analytics { database_url, payments, stores, customers, items, requests } => {
            let run =
                crate::bench::analytics::AnalyticsRun { database_url, payments, stores, customers, items, requests };
            crate::bench::analytics::analytics(config, run).await.map(|()| ExitCode::SUCCESS)
        }
        BenchCommand::Flood { database_url, rate, duration, addresses } => {
            let run = crate::bench::flood::FloodRun { database_url, rate, duration_secs: duration, addresses };
            crate::bench::flood::flood(config, run).await.map(|()| ExitCode::SUCCESS)
        }
        BenchCommand::Switch { database_url, instances, trials } => {
            let run = crate::bench::switch::SwitchRun { database_url, instances, trials };
            crate::bench::switch::switch(config, run).await.map(|()| ExitCode::SUCCESS)
        }
        BenchCommand::Tpcb { seconds } => crate::bench::tpcb(seconds).await.map(|()| ExitCode::SUCCESS),
        BenchCommand::Webhooks { database_url, events } => {
            crate::bench::webhooks(config, database_url, events).await.map(|()| ExitCode::SUCCESS)
        }
        BenchCommand::Login { logins, concurrency, checks } => {
            crate::bench::login(config, logins, concurrency, checks).await.map(|()| ExitCode::SUCCESS)
        }
        BenchCommand::Ledger { database_url, transfers, concurrency, wallets } => {
            crate::bench::ledger(database_url, transfers, concurrency, wallets).await.map(|()| ExitCode::SUCCESS)
        }
    }
}

async fn bench_pos(config: Config, command: BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Pos { database_url, payments, concurrency, rate, duration } = command else {
        anyhow::bail!("not a bench pos command");
    };
    let load = match (rate, duration) {
        (Some(rate), Some(duration_secs)) => crate::bench::Load::Open { rate, duration_secs },
        _ => crate::bench::Load::Closed { payments, concurrency },
    };
    crate::bench::pos(config, crate::bench::PosRun { database_url, load }).await.map(|()| ExitCode::SUCCESS)
}

async fn store_command(config: Config, command: StoreCommand) -> anyhow::Result<ExitCode> {
    let state = crate::app::state(config).await?;
    let StoreCommand::Create { merchant, name, city, postal_code, category } = command;
    let store = crate::merchants::NewStore {
        name: &name,
        city: &city,
        postal_code: postal_code.as_deref(),
        category: category.as_deref(),
    };
    let (id, qr) = crate::merchants::create_store(&state.db, &merchant, store, &cli_actor(), state.clock.now_ms())
        .await
        .map_err(cli_error)?;
    println!("store_id: {id}");
    println!("store_qr: {qr}");
    state.db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn terminal_command(config: Config, command: TerminalCommand) -> anyhow::Result<ExitCode> {
    let state = crate::app::state(config).await?;
    let now = state.clock.now_ms();
    let code = match command {
        TerminalCommand::Create { store } => {
            let (id, key) =
                crate::merchants::create_terminal(&state.db, &store, &cli_actor(), now).await.map_err(cli_error)?;
            println!("terminal_id: {id}");
            println!("key (shown once; configure it in the POS now): {key}");
            ExitCode::SUCCESS
        }
        TerminalCommand::Revoke { terminal } => {
            if crate::merchants::revoke_terminal(&state.db, &terminal, &cli_actor(), now).await.map_err(cli_error)? {
                println!("terminal {terminal} revoked");
                ExitCode::SUCCESS
            } else {
                eprintln!("omamori: there is no such active terminal");
                ExitCode::FAILURE
            }
        }
    };
    state.db.close().await;
    Ok(code)
}

async fn switch_command(config: Config, command: SwitchCommand) -> anyhow::Result<ExitCode> {
    let state = crate::app::state(config).await?;
    match command {
        SwitchCommand::Engage { name, scope_kind, scope_id, reason } => {
            let by = cli_actor();
            let request = crate::risk::switches::Engage {
                name: &name,
                scope_kind: &scope_kind,
                scope_id: &scope_id,
                reason: &reason,
                by: &by,
            };
            let view =
                crate::risk::switches::engage(&state.db, request, state.clock.now_ms()).await.map_err(cli_error)?;
            println!("engaged: {}", serde_json::to_string(&view)?);
        }
        SwitchCommand::List => {
            for s in crate::risk::switches::list(&state.db).await? {
                println!("{}", serde_json::to_string(&s)?);
            }
        }
    }
    state.db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(config: Config, anchor: Option<String>) -> anyhow::Result<ExitCode> {
    let anchor = match anchor.as_deref().map(|a| a.split_once(':')) {
        None => None,
        Some(Some((id, hash))) if id.parse::<i64>().is_ok() && hash.len() == 64 => {
            Some((id.parse::<i64>()?, hash.to_ascii_lowercase()))
        }
        Some(_) => {
            eprintln!("invalid --anchor: expected ID:HASH (an entry id and its 64-hex-digit hash)");
            return Ok(ExitCode::from(2));
        }
    };
    let db = connect(&config).await?;
    if let Some((id, why)) = crate::audit::verify(&db).await? {
        println!("BROKEN audit entry {id}: {why}");
        return Ok(ExitCode::FAILURE);
    }
    if let Some((id, hash)) = anchor
        && let Some(why) = crate::audit::check_anchor(&db, id, &hash).await?
    {
        println!("BROKEN audit log: {why}");
        return Ok(ExitCode::FAILURE);
    }
    println!("audit log verified: every entry holds and links to the one before it");
    if let Some((id, hash, _)) = crate::audit::head(&db).await? {
        println!("head: {id}:{hash} (keep it; --anchor {id}:{hash} later proves nothing after it was removed)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: Config) -> anyhow::Result<ExitCode> {
    let db = connect(&config).await?;
    let mut problems: Vec<String> = crate::ledger::verify(&db).await?.iter().map(ToString::to_string).collect();
    problems.extend(crate::merchants::settlement::verify(&db).await?);
    problems.extend(crate::merchants::settlement::verify_balances(&db).await?);
    if problems.is_empty() {
        println!("ledger verified: every balance equals the sum of its postings, every entry sums to zero");
        println!("settlements verified: every settlement's lines sum to its figures and the ledger agrees");
        println!(
            "merchant balances verified: each is its unsettled payments, refunds and reversals plus a carried net"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("MISMATCH {p}");
        }
        println!("ledger verification failed: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

async fn settle(config: Config, date: &str) -> anyhow::Result<ExitCode> {
    use crate::merchants::settlement::{self, SettleError};
    let db = connect(&config).await?;
    let clock = crate::store::clock::Clock::load(&db).await?;
    match settlement::settle_day(&db, date, clock.now_ms()).await {
        Ok(report) if !report.closed_now => {
            println!("{date} was already settled: nothing changed");
            Ok(ExitCode::SUCCESS)
        }
        Ok(report) => {
            for (merchant, id, f) in &report.settlements {
                println!(
                    "settled {merchant} {id}: {} payments, gross {}, refunds {}, fee {}, carried over {}, net {}",
                    f.payments, f.gross, f.refunds, f.fee, f.carried_over, f.net
                );
            }
            println!("{date} settled: {} settlement(s)", report.settlements.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (SettleError::InvalidDate | SettleError::NotEnded(_))) => {
            eprintln!("omamori: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
