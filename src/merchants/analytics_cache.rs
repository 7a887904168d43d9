//! Merchants' analytics from memory (issue 12): each instance keeps, per merchant, the payments of
//! its closed days in compact form ([`analytics_rows`](super::analytics_rows)), read from the
//! database once and then reused by every question, period and store filter; the rest of a
//! period (today, and yesterday until it is safely closed) is read live with each question. The
//! figures are computed in Rust and equal what the SQL of [`analytics`] answers, which stays the
//! reference and answers whenever memory cannot (the cache off, no closed day in the period, a
//! value that does not fit, a tie only a payment id breaks).
//!
//! Staleness: none for what the service writes. A day is *closed*, and may be cached, once
//! [`FOLD_OVERLAP_MS`] and [`CLOSE_MARGIN_MS`] have passed after its end: a payment commits
//! within that of the moment it carries, as the first-visit fold already assumes. After that a
//! day's payments change only by an update or a delete (a refund, a reversal, a hand edit), and a
//! trigger moves the day's generation in `analytics_generations` in the writer's own transaction
//! (day -1: the merchant's first visits). Each question reads the generations of its days (one
//! indexed query) in the same snapshot as whatever it loads, and reloads a day whose generation
//! moved, whichever instance changed it. Not watched: a payment or basket line inserted by hand
//! dated more than that in the past, which the first-visit fold would miss as well.
//!
//! Memory: at most `analytics_cache_mib` on an instance (the days of questions in flight aside);
//! past it, the least recently used merchant goes first, then the merchant's least recently used
//! days. A year of the bench's 1,000,000 payments takes about 60 MiB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use sqlx::Row;

use super::analytics::{self, Baskets, Customers, DAY_MS, FOLD_OVERLAP_MS, Filter, GroupBy, Sales, Sql, TOKYO_MS};
use super::analytics_rows::{
    self as rows, Block, Catalog, CustomerIds, NO_CUSTOMER, NewPayment, Newness, Returned, View,
};
use crate::ids::MerchantId;
use crate::store::{Backend, Conn, Db};

/// How long after [`FOLD_OVERLAP_MS`] past a day's end it is cached: room for instances' clocks
/// to disagree.
pub const CLOSE_MARGIN_MS: i64 = 60_000;

/// One analytics question: whose, which payments, the privacy threshold, the service clock, and
/// this instance's cache size.
pub struct Ask<'a> {
    pub db: &'a Db,
    pub filter: &'a Filter,
    pub min: i64,
    pub now: i64,
    pub cache_mib: u32,
}

/// `GET /v1/merchant/analytics/sales`: from memory, or from SQL when memory cannot answer.
pub async fn sales(ask: &Ask<'_>, group: GroupBy) -> Result<Sales, sqlx::Error> {
    let min = ask.min;
    if let Some(answer) = from_memory(ask, move |v| rows::sales(v, group, min)).await? {
        return Ok(answer);
    }
    analytics::sales(ask.db, ask.filter, group, ask.min).await
}

/// `GET /v1/merchant/analytics/customers`, as [`sales`].
pub async fn customers(ask: &Ask<'_>) -> Result<Customers, sqlx::Error> {
    let min = ask.min;
    if let Some(answer) = from_memory(ask, move |v| rows::customers(v, min)).await? {
        return Ok(answer);
    }
    let mut conn = ask.db.pool().acquire().await?;
    analytics::customers(&mut conn, ask.filter, ask.min).await
}

/// `GET /v1/merchant/analytics/baskets`, as [`sales`].
pub async fn baskets(ask: &Ask<'_>) -> Result<Baskets, sqlx::Error> {
    let min = ask.min;
    if let Some(answer) = from_memory(ask, move |v| rows::baskets(v, min)).await? {
        return Ok(answer);
    }
    analytics::baskets(ask.db, ask.filter, ask.min).await
}

/// A figure computed off the async runtime over the question's rows (`None`: ask SQL).
async fn from_memory<T: Send + 'static>(
    ask: &Ask<'_>,
    figure: impl FnOnce(&View) -> Option<T> + Send + 'static,
) -> Result<Option<T>, sqlx::Error> {
    let Some((cache, view)) = view(ask).await? else { return Ok(None) };
    let answer = match tokio::task::spawn_blocking(move || figure(&view)).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e, "analytics from memory failed; SQL answers");
            None
        }
    };
    let counter = if answer.is_some() { &cache.answers } else { &cache.declined };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok(answer)
}

/// What this instance keeps, for `bench analytics` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub merchants: usize,
    pub days: usize,
    pub payments: usize,
    pub bytes: usize,
    /// Answers given from memory, and questions that had rows in memory but SQL answered.
    pub answers: u64,
    pub declined: u64,
}

/// What this instance's cache holds now.
pub fn stats(db: &Db) -> Stats {
    let Some(cache) = crate::store::cache::peek_instance::<AnalyticsCache>(db) else { return Stats::default() };
    let slots = cache.slots.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Stats {
        merchants: slots.len(),
        answers: cache.answers.load(Ordering::Relaxed),
        declined: cache.declined.load(Ordering::Relaxed),
        ..Stats::default()
    };
    for slot in slots.values() {
        s.days += slot.size.days;
        s.payments += slot.size.payments;
        s.bytes += slot.size.bytes;
    }
    s
}

/// A Tokyo day's number (as the SQL computes it for times after 1970) and its first moment.
fn day_of(ms: i64) -> i64 {
    (ms + TOKYO_MS).div_euclid(DAY_MS)
}

fn day_start(day: i64) -> i64 {
    day * DAY_MS - TOKYO_MS
}

/// A question's days: `[first, cached_end)` are closed (from memory); from `live_from` to the
/// filter's end is read live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    first: i64,
    cached_end: i64,
    live_from: i64,
}

/// The plan of a question, or `None` when memory has nothing to give (no closed day in it, or a
/// period that is not whole Tokyo days).
fn plan(f: &Filter, now: i64) -> Option<Plan> {
    let (first, end) = (day_of(f.start), day_of(f.end));
    if day_start(first) != f.start || day_start(end) != f.end || first < 0 {
        return None;
    }
    let closed = day_of(now - FOLD_OVERLAP_MS - CLOSE_MARGIN_MS);
    let cached_end = end.min(closed);
    (cached_end > first).then(|| Plan { first, cached_end, live_from: day_start(cached_end) })
}

/// The instance's cache: merchants by id, each behind a lock of its own (a load holds it across
/// its queries, so one merchant's days are read once however many ask at once).
pub struct AnalyticsCache {
    cap_bytes: usize,
    slots: std::sync::Mutex<HashMap<MerchantId, Slot>>,
    tick: AtomicU64,
    answers: AtomicU64,
    declined: AtomicU64,
}

struct Slot {
    days: Arc<tokio::sync::Mutex<MerchantDays>>,
    used: u64,
    size: Size,
}

#[derive(Debug, Clone, Copy, Default)]
struct Size {
    days: usize,
    payments: usize,
    bytes: usize,
}

/// One merchant's cached days, the texts they refer to by number, and first visits per store.
#[derive(Default)]
struct MerchantDays {
    catalog: Arc<Catalog>,
    customers: CustomerIds,
    days: BTreeMap<i64, Day>,
    firsts: HashMap<u32, Firsts>,
}

struct Day {
    block: Arc<Block>,
    generation: i64,
    used: u64,
}

/// A store's first visits (customer → moment), good for the days before `covers` while the
/// merchant's first-visit generation is `generation`.
struct Firsts {
    map: Arc<HashMap<u32, i64>>,
    generation: i64,
    covers: i64,
}

impl MerchantDays {
    fn size(&self) -> Size {
        let blocks = self.days.values().map(|d| d.block.bytes()).sum::<usize>();
        let firsts = self.firsts.values().map(|f| f.map.len() * 24).sum::<usize>();
        Size {
            days: self.days.len(),
            payments: self.days.values().map(|d| d.block.len()).sum(),
            bytes: blocks + firsts + self.catalog.bytes() + self.customers.bytes(),
        }
    }
}

fn instance(db: &Db, cache_mib: u32) -> Arc<AnalyticsCache> {
    crate::store::cache::per_instance(db, || AnalyticsCache {
        cap_bytes: cache_mib as usize * 1024 * 1024,
        slots: std::sync::Mutex::new(HashMap::new()),
        tick: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        declined: AtomicU64::new(0),
    })
}

impl AnalyticsCache {
    fn merchant(&self, id: &MerchantId, tick: u64) -> Arc<tokio::sync::Mutex<MerchantDays>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(id.clone()).or_insert_with(|| Slot {
            days: Arc::new(tokio::sync::Mutex::new(MerchantDays::default())),
            used: tick,
            size: Size::default(),
        });
        slot.used = tick;
        slot.days.clone()
    }

    /// Records a merchant's size after a question, then evicts down to the cap: the least
    /// recently used other merchants first, then this merchant's least recently used days.
    fn settle(&self, id: &MerchantId, days: &Arc<tokio::sync::Mutex<MerchantDays>>, m: &mut MerchantDays) {
        let mut size = m.size();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let others = |slots: &HashMap<MerchantId, Slot>| {
            slots.iter().filter(|(k, _)| *k != id).map(|(_, s)| s.size.bytes).sum::<usize>()
        };
        while others(&slots) + size.bytes > self.cap_bytes {
            let oldest = slots.iter().filter(|(k, _)| *k != id).min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    slots.remove(&k);
                }
                None => break,
            }
        }
        while size.bytes > self.cap_bytes.saturating_sub(others(&slots)) && !m.days.is_empty() {
            let oldest = m.days.iter().min_by_key(|(day, d)| (d.used, **day)).map(|(day, _)| *day);
            if let Some(day) = oldest {
                m.days.remove(&day);
            }
            m.firsts.clear();
            size = m.size();
        }
        match slots.get_mut(id) {
            Some(slot) if Arc::ptr_eq(&slot.days, days) => slot.size = size,
            Some(_) => {}
            None => {
                let used = self.tick.load(Ordering::Relaxed);
                slots.insert(id.clone(), Slot { days: days.clone(), used, size });
            }
        }
        let total: usize = slots.values().map(|s| s.size.bytes).sum();
        metrics::gauge!("omamori_analytics_cache_bytes").set(total as f64);
    }
}

/// The rows of a question, with the cache brought up to date under the merchant's lock.
async fn view(ask: &Ask<'_>) -> Result<Option<(Arc<AnalyticsCache>, View)>, sqlx::Error> {
    let f = ask.filter;
    if ask.cache_mib == 0 || f.stores.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let Some(plan) = plan(f, ask.now) else { return Ok(None) };
    let cache = instance(ask.db, ask.cache_mib);
    let tick = cache.tick.fetch_add(1, Ordering::Relaxed) + 1;
    let days = cache.merchant(&f.merchant_id, tick);
    let mut m = days.lock().await;
    // One snapshot for the generations and every row read with them.
    let mut tx = match ask.db.backend() {
        Backend::Postgres => ask.db.pool().begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?,
        Backend::Sqlite => ask.db.pool().begin().await?,
    };
    let built = build_view(&mut tx, &mut m, f, plan, tick).await?;
    tx.commit().await?;
    cache.settle(&f.merchant_id, &days, &mut m);
    if built.is_none() {
        cache.declined.fetch_add(1, Ordering::Relaxed);
    }
    Ok(built.map(|v| (cache.clone(), v)))
}

async fn build_view(
    conn: &mut Conn,
    m: &mut MerchantDays,
    f: &Filter,
    plan: Plan,
    tick: u64,
) -> Result<Option<View>, sqlx::Error> {
    let generations = generations(conn, &f.merchant_id, plan).await?;
    if !refresh_days(conn, m, &f.merchant_id, plan, &generations).await? {
        return Ok(None);
    }
    let Some(newness) = newness(conn, m, f, plan, generations.get(&-1).copied().unwrap_or(0)).await? else {
        return Ok(None);
    };
    let mut live = Vec::new();
    if plan.live_from < f.end {
        let today = Filter { start: plan.live_from, ..f.clone() };
        let Some(blocks) = load(conn, &Source::Live(&today), m).await? else { return Ok(None) };
        live = blocks.into_iter().map(|(_, b)| b).collect();
    }
    let stores = match &f.stores {
        None => None,
        Some(list) => {
            let mut mask = vec![false; m.catalog.stores.len()];
            for s in list.iter().filter_map(|s| m.catalog.stores.get(s.as_str())) {
                mask[s as usize] = true;
            }
            Some(mask)
        }
    };
    let mut cached = Vec::new();
    for (_, d) in m.days.range_mut(plan.first..plan.cached_end) {
        d.used = tick;
        cached.push(d.block.clone());
    }
    let customers = m.customers.len();
    Ok(Some(View { cached, live, catalog: m.catalog.clone(), customers, stores, newness }))
}

/// The generations of the plan's days that ever moved (day → generation; -1: first visits).
async fn generations(conn: &mut Conn, merchant: &MerchantId, plan: Plan) -> Result<HashMap<i64, i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, generation FROM analytics_generations WHERE merchant_id = $1 \
         AND (day = -1 OR (day >= $2 AND day < $3))",
    )
    .bind(merchant)
    .bind(plan.first)
    .bind(plan.cached_end)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
}

/// Loads the plan's closed days that are missing or whose generation moved, a run of days per
/// query; `false` when a row does not fit in memory.
async fn refresh_days(
    conn: &mut Conn,
    m: &mut MerchantDays,
    merchant: &MerchantId,
    plan: Plan,
    generations: &HashMap<i64, i64>,
) -> Result<bool, sqlx::Error> {
    let generation = |day: i64| generations.get(&day).copied().unwrap_or(0);
    let stale = |m: &MerchantDays, day: i64| m.days.get(&day).is_none_or(|d| d.generation != generation(day));
    let mut day = plan.first;
    while day < plan.cached_end {
        if !stale(m, day) {
            day += 1;
            continue;
        }
        let mut end = day + 1;
        while end < plan.cached_end && stale(m, end) {
            end += 1;
        }
        let source = Source::Closed { merchant, start: day_start(day), end: day_start(end) };
        let Some(blocks) = load(conn, &source, m).await? else { return Ok(false) };
        let mut blocks: HashMap<i64, Block> = blocks.into_iter().collect();
        for d in day..end {
            let block = blocks.remove(&d).unwrap_or_else(|| Block::new(day_start(d)));
            m.days.insert(d, Day { block: Arc::new(block), generation: generation(d), used: 0 });
        }
        day = end;
    }
    Ok(true)
}

/// How the question tells a cached payment new: by the merchant's first visits, one store's, or
/// several stores' (loading their first visits); `None` when a value does not fit.
async fn newness(
    conn: &mut Conn,
    m: &mut MerchantDays,
    f: &Filter,
    plan: Plan,
    generation: i64,
) -> Result<Option<Newness>, sqlx::Error> {
    let Some(list) = &f.stores else { return Ok(Some(Newness::Merchant)) };
    let mut stores: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
    stores.sort_unstable();
    stores.dedup();
    if stores.len() == 1 {
        return Ok(Some(Newness::Store));
    }
    let mut firsts = Vec::with_capacity(stores.len());
    for store in stores {
        let Some(id) = rows::store_id(&mut m.catalog, store) else { return Ok(None) };
        let fresh = m.firsts.get(&id).filter(|x| x.generation == generation && x.covers >= plan.cached_end);
        let map = match fresh {
            Some(x) => x.map.clone(),
            None => {
                let Some(map) = store_firsts(conn, m, &f.merchant_id, store).await? else { return Ok(None) };
                let map = Arc::new(map);
                m.firsts.insert(id, Firsts { map: map.clone(), generation, covers: plan.cached_end });
                map
            }
        };
        firsts.push((id, map));
    }
    Ok(Some(Newness::Among(firsts)))
}

/// A store's first visits: customer → the moment of their first payment there.
async fn store_firsts(
    conn: &mut Conn,
    m: &mut MerchantDays,
    merchant: &MerchantId,
    store: &str,
) -> Result<Option<HashMap<u32, i64>>, sqlx::Error> {
    let mut rows =
        sqlx::query("SELECT customer_ref, first_at FROM customer_firsts WHERE merchant_id = $1 AND store_id = $2")
            .bind(merchant)
            .bind(store)
            .fetch(&mut *conn);
    let mut map = HashMap::new();
    while let Some(row) = rows.try_next().await? {
        let Some(customer) = m.customers.id(row.try_get::<&str, _>(0)?) else { return Ok(None) };
        map.insert(customer, row.try_get::<i64, _>(1)?);
    }
    Ok(Some(map))
}

/// Which payments a load reads.
enum Source<'a> {
    /// Every succeeded payment of the merchant in `[start, end)`, with its first-visit flags.
    Closed { merchant: &'a MerchantId, start: i64, end: i64 },
    /// The filter's payments, each marked new or not to the filter's stores.
    Live(&'a Filter),
}

impl Source<'_> {
    /// `WITH ... q AS (...)`: the payments, numbered in the order (time, id) every load reads.
    fn with(&self, sql: &mut Sql) -> String {
        let p = match self {
            Source::Closed { merchant, start, end } => {
                let (m, s, e) = (sql.text(merchant.as_str()), sql.int(*start), sql.int(*end));
                format!(
                    "WITH p AS (SELECT id, store_id, amount, refunded, customer_ref, created_at FROM payments \
                     WHERE merchant_id = {m} AND created_at >= {s} AND created_at < {e} AND status = 'succeeded'), "
                )
            }
            Source::Live(f) => format!("{}, ", analytics::scoped(f, sql)),
        };
        format!(
            "{p}q AS (SELECT id, store_id, amount, refunded, customer_ref, created_at, \
             ROW_NUMBER() OVER (ORDER BY created_at, id) AS n FROM p) "
        )
    }

    /// A payment's flags: its first visits ([`rows::FIRST_AT_MERCHANT`], [`rows::FIRST_AT_STORE`]),
    /// or whether it is new to the filter ([`rows::NEW_HERE`]).
    fn flags(&self, sql: &mut Sql) -> String {
        match self {
            Source::Closed { merchant, start, end } => {
                let (m, s, e) = (sql.text(merchant.as_str()), sql.int(*start), sql.int(*end));
                let first = |stores: &str| {
                    format!(
                        "(CASE WHEN q.id IN (SELECT payment_id FROM customer_firsts WHERE merchant_id = {m} \
                         AND store_id {stores} AND first_at >= {s} AND first_at < {e}) THEN 1 ELSE 0 END)"
                    )
                };
                format!("CAST({} + 2 * {} AS BIGINT)", first("= ''"), first("> ''"))
            }
            Source::Live(_) => {
                "CAST(CASE WHEN q.id IN (SELECT payment_id FROM newp) THEN 4 ELSE 0 END AS BIGINT)".into()
            }
        }
    }
}

/// Rows being read into day blocks; `first_n` holds each block's first payment number.
#[derive(Default)]
struct Loading {
    blocks: Vec<(i64, Block)>,
    first_n: Vec<i64>,
    count: i64,
}

impl Loading {
    fn add(&mut self, n: i64, p: NewPayment) -> Option<()> {
        if n != self.count + 1 {
            return None;
        }
        let day = day_of(p.created_at);
        match self.blocks.last() {
            Some((d, _)) if *d == day => {}
            Some((d, _)) if *d > day => return None,
            _ => {
                self.blocks.push((day, Block::new(day_start(day))));
                self.first_n.push(n);
            }
        }
        self.blocks.last_mut()?.1.push_payment(p)?;
        self.count = n;
        Some(())
    }

    /// The block and place of payment number `n`.
    fn locate(&mut self, n: i64) -> Option<(&mut Block, u32)> {
        let at = self.first_n.partition_point(|&first| first <= n).checked_sub(1)?;
        let local = u32::try_from(n - self.first_n[at]).ok()?;
        let block = &mut self.blocks.get_mut(at)?.1;
        (local < block.len() as u32).then_some((block, local))
    }
}

/// Reads a source's payments, basket lines and returned items into day blocks (`None`: a value
/// does not fit, and SQL must answer).
async fn load(
    conn: &mut Conn,
    src: &Source<'_>,
    m: &mut MerchantDays,
) -> Result<Option<Vec<(i64, Block)>>, sqlx::Error> {
    let mut into = Loading::default();
    if load_payments(conn, src, m, &mut into).await?.is_none()
        || load_lines(conn, src, m, &mut into).await?.is_none()
        || load_returned(conn, src, m, &mut into).await?.is_none()
    {
        return Ok(None);
    }
    for (_, b) in &mut into.blocks {
        b.finish();
    }
    Ok(Some(into.blocks))
}

async fn load_payments(
    conn: &mut Conn,
    src: &Source<'_>,
    m: &mut MerchantDays,
    into: &mut Loading,
) -> Result<Option<()>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = src.with(&mut sql);
    let flags = src.flags(&mut sql);
    sql.text = format!(
        "{with}SELECT q.n, q.store_id, q.amount, q.refunded, q.customer_ref, q.created_at, {flags} AS flags \
         FROM q ORDER BY q.n"
    );
    let mut rows = sql.fetch(conn);
    while let Some(r) = rows.try_next().await? {
        let customer = match r.try_get::<Option<&str>, _>(4)? {
            None => NO_CUSTOMER,
            Some(c) => match m.customers.id(c) {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let Some(store) = rows::store_id(&mut m.catalog, r.try_get::<&str, _>(1)?) else { return Ok(None) };
        let flags = u8::try_from(r.try_get::<i64, _>(6)?).unwrap_or(0);
        let p = NewPayment {
            created_at: r.try_get(5)?,
            amount: r.try_get(2)?,
            refunded: r.try_get(3)?,
            customer,
            store,
            flags,
        };
        if into.add(r.try_get(0)?, p).is_none() {
            return Ok(None);
        }
    }
    Ok(Some(()))
}

async fn load_lines(
    conn: &mut Conn,
    src: &Source<'_>,
    m: &mut MerchantDays,
    into: &mut Loading,
) -> Result<Option<()>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = src.with(&mut sql);
    sql.text = format!(
        "{with}SELECT q.n, i.sku, i.name, i.category, i.quantity, i.unit_amount \
         FROM q JOIN payment_items i ON i.payment_id = q.id ORDER BY q.n"
    );
    let mut rows = sql.fetch(conn);
    while let Some(r) = rows.try_next().await? {
        let category = r.try_get::<Option<&str>, _>(3)?.unwrap_or("");
        let variant = rows::variant_id(&mut m.catalog, r.try_get(1)?, category, r.try_get(2)?);
        let gross = r.try_get::<i64, _>(4)?.checked_mul(r.try_get::<i64, _>(5)?);
        let (Some(variant), Some(gross)) = (variant, gross) else { return Ok(None) };
        let Some((block, payment)) = into.locate(r.try_get(0)?) else { return Ok(None) };
        if block.push_line(payment, variant, gross).is_none() {
            return Ok(None);
        }
    }
    Ok(Some(()))
}

/// The items refunds returned, valued as the SQL values them.
async fn load_returned(
    conn: &mut Conn,
    src: &Source<'_>,
    m: &mut MerchantDays,
    into: &mut Loading,
) -> Result<Option<()>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = src.with(&mut sql);
    let line = |col: &str| {
        format!("(SELECT MAX(i.{col}) FROM payment_items i WHERE i.payment_id = r.payment_id AND i.sku = r.sku)")
    };
    sql.text = format!(
        "{with}SELECT q.n, r.sku, {} AS category, CAST(r.quantity * {} AS BIGINT) AS v \
         FROM q JOIN refund_items r ON r.payment_id = q.id WHERE q.refunded > 0",
        line("category"),
        line("unit_amount")
    );
    let mut rows = sql.fetch(conn);
    while let Some(r) = rows.try_next().await? {
        // A returned sku that is not in the basket is worth nothing (SQL sums a NULL).
        let Some(value) = r.try_get::<Option<i64>, _>(3)? else { continue };
        let sku = rows::sku_id(&mut m.catalog, r.try_get(1)?);
        let category = rows::category_id(&mut m.catalog, r.try_get::<Option<&str>, _>(2)?.unwrap_or(""));
        let (Some(sku), Some(category)) = (sku, category) else { return Ok(None) };
        let Some((block, payment)) = into.locate(r.try_get(0)?) else { return Ok(None) };
        block.push_returned(Returned { payment, sku, category, value });
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(start: i64, end: i64) -> Filter {
        Filter { merchant_id: MerchantId::from_raw("mer_x"), stores: None, start, end }
    }

    #[test]
    fn a_day_is_cached_once_it_is_safely_closed() {
        let today = 20_000;
        let (start, end) = (day_start(today - 29), day_start(today + 1));
        // Just after midnight, yesterday is still read live; three minutes later it is closed.
        let just_after = day_start(today) + 1_000;
        assert_eq!(plan(&filter(start, end), just_after).map(|p| p.cached_end), Some(today - 1));
        let later = day_start(today) + FOLD_OVERLAP_MS + CLOSE_MARGIN_MS;
        let p = plan(&filter(start, end), later).unwrap();
        assert_eq!((p.first, p.cached_end, p.live_from), (today - 29, today, day_start(today)));
        // Today alone has nothing closed; nor has a period that is not whole days.
        assert_eq!(plan(&filter(day_start(today), end), later), None);
        assert_eq!(plan(&filter(start + 1, end), later), None);
    }
}
