//! Sandbox mode (ARCHITECTURE section 11): what development and tests need, on either database.
//!
//! Routes exist only when `sandbox = true`; production refuses sandbox mode at start-up. They are
//! the message list (read from the outbox), the service clock, and test accounts with transfers
//! between them, so that the ledger, idempotency and notifications can be tried from a shell
//! before the shopper and POS routes exist. On start, `sandbox.json` in the data directory tells a
//! newcomer what was prepared.

pub mod routes;

use crate::ids::MerchantId;
use crate::ids::StoreId;
use crate::ids::UserId;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::identity::operators::Role;
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry};
use crate::money::{Currency, Yen};
use crate::state::AppState;
use crate::store;

/// Money every demo wallet starts with.
/// The demo merchant's owner, who logs in to `/merchant`.
const DEMO_MERCHANT_OWNER: &str = "owner@demo-mart.sandbox.omamori.test";
const DEMO_WALLET_START_YEN: i64 = 10_000;
const DEMO_WALLETS: [&str; 2] = ["demo-wallet-1@sandbox.omamori.test", "demo-wallet-2@sandbox.omamori.test"];
pub(crate) const FUNDING_OWNER: &str = "sandbox";
const SANDBOX_PREPARE_LOCK: i64 = 0x0053_414e_4442_4f58;

/// Creates the demo accounts once (a restart finds them) and writes `sandbox.json`.
pub async fn prepare(state: &AppState, addr: SocketAddr) -> anyhow::Result<()> {
    let funding = demo_accounts(state).await?;
    let wallets = demo_wallets(state).await?;
    let operators = demo_operators(state).await?;
    let (merchant_id, store_id, store_qr, terminal_key) = demo_store(state).await?;
    let shopper = demo_shopper(state, funding).await?;
    let owner = crate::identity::staff::create_or_reset_owner(state, &merchant_id, DEMO_MERCHANT_OWNER).await?;
    let merchant_owner = json!({"email": owner.email, "password": owner.password, "totp_secret": owner.totp_secret});
    let doc = json!({
        "base_url": format!("http://{addr}"),
        "wallet_url": format!("http://localhost:{}/app", addr.port()),
        "shopper": shopper,
        "operators": operators,
        "merchant_owner": merchant_owner,
        "merchant_url": format!("http://localhost:{}/merchant", addr.port()),
        "merchant_id": merchant_id,
        "store_id": store_id,
        "store_qr": store_qr,
        "terminal_key": terminal_key,
        "database": state.db.backend().name(),
        "funding_account_id": funding,
        "demo_wallets": wallets,
        "try": try_commands(addr, funding, &wallets),
    });
    let path = state.config.data_dir.join("sandbox.json");
    crate::store::write_private(&path, &serde_json::to_string_pretty(&doc)?)?;
    tracing::info!(path = %path.display(), "wrote sandbox.json");
    Ok(())
}

/// The funding account and the demo wallets, each funded when it is made; returns the funding
/// account.
async fn demo_accounts(state: &AppState) -> Result<AccountId, ledger::LedgerError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        // Two instances starting at once must not both create the demo accounts.
        tx.serialize_on(SANDBOX_PREPARE_LOCK).await?;
        let funding = match ledger::account_by_owner(&mut tx, AccountKind::FundingClearing, FUNDING_OWNER).await? {
            Some(a) => a.id,
            None => {
                ledger::create_account(&mut tx, AccountKind::FundingClearing, Currency::Jpy, Some(FUNDING_OWNER), now)
                    .await?
            }
        };
        for owner in DEMO_WALLETS {
            if ledger::account_by_owner(&mut tx, AccountKind::Wallet, owner).await?.is_none() {
                let wallet =
                    ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some(owner), now).await?;
                let entry = NewEntry::transfer(
                    EntryKind::Adjustment,
                    "sandbox-demo-funding",
                    funding,
                    wallet,
                    Yen(DEMO_WALLET_START_YEN),
                );
                ledger::post(&mut tx, &entry, now).await?;
            }
        }
        tx.commit().await?;
        Ok::<_, ledger::LedgerError>(funding)
    })
    .await
}

/// The demo wallets as `sandbox.json` lists them.
async fn demo_wallets(state: &AppState) -> anyhow::Result<Vec<Value>> {
    let mut conn = state.db.pool().acquire().await?;
    let mut wallets = Vec::new();
    for owner in DEMO_WALLETS {
        if let Some(a) = ledger::account_by_owner(&mut conn, AccountKind::Wallet, owner).await? {
            wallets.push(json!({"account_id": a.id, "owner": owner, "balance": a.balance, "currency": a.currency}));
        }
    }
    Ok(wallets)
}

/// An admin and an operator with fresh credentials, as `sandbox.json` shows them.
async fn demo_operators(state: &AppState) -> anyhow::Result<Vec<Value>> {
    let mut operators = Vec::new();
    for (email, role) in
        [("operator1@sandbox.omamori.test", Role::Admin), ("operator2@sandbox.omamori.test", Role::Operator)]
    {
        let created = crate::identity::operators::create_or_reset(state, email, role).await?;
        operators.push(json!({
            "email": created.email,
            "password": created.password,
            "totp_secret": created.totp_secret,
            "role": created.role.as_str(),
        }));
    }
    Ok(operators)
}

/// Commands a newcomer can paste to see the sandbox answer.
fn try_commands(addr: SocketAddr, funding: AccountId, wallets: &[Value]) -> Value {
    json!([
        format!("curl -s http://{addr}/v1/sandbox/accounts/{}", funding.0),
        format!(
            "curl -s -X POST http://{addr}/v1/sandbox/transfers -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{{\"from_account\": {}, \"to_account\": {}, \"amount\": 500}}'",
            wallets.first().map(|w| w["account_id"].clone()).unwrap_or_default(),
            wallets.get(1).map(|w| w["account_id"].clone()).unwrap_or_default()
        ),
    ])
}

const DEMO_MERCHANT: &str = "Omamori Demo Mart";

/// The demo merchant and store (made once) and a fresh terminal key (the previous sandbox
/// terminals are revoked: a key is shown only when it is made).
async fn demo_store(state: &AppState) -> anyhow::Result<(MerchantId, StoreId, String, String)> {
    let now = state.clock.now_ms();
    let (merchant_id, store_id) =
        match crate::merchants::first_store_of_merchant_named(&state.db, DEMO_MERCHANT).await? {
            Some(found) => found,
            None => {
                let merchant =
                    crate::merchants::create_merchant(&state.db, DEMO_MERCHANT, "5411", "system:sandbox", now).await?;
                let store = crate::merchants::NewStore {
                    name: "Demo Mart Shibuya",
                    city: "Tokyo",
                    postal_code: Some("150-0002"),
                    category: None,
                };
                let (store_id, _) =
                    crate::merchants::create_store(&state.db, &merchant, store, "system:sandbox", now).await?;
                (merchant, store_id)
            }
        };
    crate::merchants::revoke_store_terminals(&state.db, &store_id, now).await?;
    let (_, key) = crate::merchants::create_terminal(&state.db, &store_id, "system:sandbox", now).await?;
    let mut conn = state.db.pool().acquire().await?;
    let qr = crate::merchants::store_by_id(&mut conn, &store_id).await?.map(|s| s.qr_payload()).unwrap_or_default();
    Ok((merchant_id, store_id, qr, key))
}

/// The demo shopper of API.md's "Sandbox additions": made once through the real sign-up (its
/// codes read back from the outbox), with ¥10,000 and a linked test card, so that the wallet at
/// `/app` can be tried at once. Its later codes are at `/v1/sandbox/messages`.
const DEMO_SHOPPER_PHONE: &str = "+819000000001";
const DEMO_SHOPPER_EMAIL: &str = "shopper@sandbox.omamori.test";
const DEMO_SHOPPER_PASSWORD: &str = "Tanuki-Lantern-Kanda-2026";

async fn demo_shopper(state: &AppState, funding: AccountId) -> anyhow::Result<Value> {
    use crate::identity::{self, Login};
    if state.config.notify.sms_gateway_url.is_some() || state.config.notify.smtp_url.is_some() {
        // Its sign-up would send real messages to a made-up number: only sandbox channels get it.
        tracing::info!("no demo shopper: an SMS gateway or a mail server is configured");
        return Ok(Value::Null);
    }
    let doc = json!({"phone": DEMO_SHOPPER_PHONE, "email": DEMO_SHOPPER_EMAIL, "password": DEMO_SHOPPER_PASSWORD});
    let login = Login::parse(DEMO_SHOPPER_PHONE).ok_or_else(|| anyhow::anyhow!("the demo phone parses"))?;
    let mut conn = state.db.pool().acquire().await?;
    if identity::user_by_login(&mut conn, &login).await?.is_some() {
        return Ok(doc);
    }
    drop(conn);
    let client = demo_client();
    let request = identity::signup::Request {
        phone: DEMO_SHOPPER_PHONE,
        email: DEMO_SHOPPER_EMAIL,
        password: DEMO_SHOPPER_PASSWORD,
    };
    let signup_id = identity::signup::start(state, &request, &client).await?;
    let (phone_code, email_code) =
        (code_sent(state, DEMO_SHOPPER_PHONE).await?, code_sent(state, DEMO_SHOPPER_EMAIL).await?);
    let codes = identity::signup::Codes { phone_code: &phone_code, email_code: &email_code };
    let user_id = identity::signup::verify(state, &signup_id, &codes, &client).await?;
    fund_and_link(state, funding, &user_id, &client).await?;
    Ok(doc)
}

/// The demo data's own client: a loopback address, counted as Japan.
fn demo_client() -> crate::risk::client::ClientInfo {
    crate::risk::client::ClientInfo {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        ip_text: "127.0.0.1".into(),
        subnet: "127.0.0.0/24".into(),
        country: Some("JP".into()),
    }
}

async fn code_sent(state: &AppState, to: &str) -> anyhow::Result<String> {
    let messages = crate::notify::messages_to(&state.db, to, 5).await?;
    messages.into_iter().find_map(|m| m.code).ok_or_else(|| anyhow::anyhow!("no sign-up code was sent to {to}"))
}

/// ¥10,000 from the sandbox's funding account, and (with the sandbox processor) the test card
/// linked through a short session of its own (closed at once).
async fn fund_and_link(
    state: &AppState,
    funding: AccountId,
    user_id: &UserId,
    client: &crate::risk::client::ClientInfo,
) -> anyhow::Result<()> {
    use crate::identity::session::{self, NewSession, Subject, Timeouts};
    let now = state.clock.now_ms();
    let mut conn = state.db.pool().acquire().await?;
    let user = crate::identity::user_by_id(&mut conn, user_id).await?.ok_or_else(|| anyhow::anyhow!("no demo user"))?;
    let mut tx = state.db.begin().await?;
    let entry = NewEntry::transfer(
        EntryKind::Adjustment,
        "sandbox-demo-shopper",
        funding,
        AccountId(user.wallet_account_id),
        Yen(DEMO_WALLET_START_YEN),
    );
    ledger::post(&mut tx, &entry, now).await?;
    tx.commit().await?;
    let timeouts = Timeouts::from_config(&state.config);
    let new = NewSession {
        subject: Subject::User(user_id.as_str()),
        device_id: "sandbox-setup",
        ip: "127.0.0.1",
        country: Some("JP"),
        step_up: true,
    };
    if state.config.processor_kind() != Some(crate::config::ProcessorKind::Sandbox) {
        // A real processor (Stripe in test mode, localstripe) would take a card: none is linked.
        tracing::info!("the demo shopper gets no linked card: a real card processor is configured");
        return Ok(());
    }
    let opened = session::open(&mut conn, &new, timeouts, now).await?;
    let live = session::authenticate(&mut conn, &opened.token, timeouts, now).await?;
    let user_session =
        live.and_then(|l| l.into_user()).ok_or_else(|| anyhow::anyhow!("the setup session is not live"))?;
    let card = crate::ports::processor::RawCard {
        number: crate::secret::Secret::new("4242424242424242".to_string()),
        exp_month: 12,
        exp_year: 2031,
        cvc: crate::secret::Secret::new("123".to_string()),
    };
    let who = crate::payments::cards::Linker { session: &user_session, client };
    let linked = crate::payments::cards::link(state, &who, crate::payments::cards::CardInput::Raw(card)).await;
    session::revoke(&mut conn, &opened.id, state.clock.now_ms()).await?;
    linked?;
    Ok(())
}
