//! Merchants' analytics from memory (issue 12): each instance keeps, per merchant, the payments of
//! its closed days in compact form ([`analytics_rows`](super::analytics_rows)), read from the
//! database once and then reused by every question, period and store filter; the rest of a
//! period (today, and yesterday until it is safely closed) is read live with each question. The
//! figures are computed in Rust and equal what the SQL of [`analytics`] answers, which stays the
//! reference and answers whenever memory cannot: the cache off, no closed day in the period, a
//! value that does not fit, a tie only a payment id breaks, and more closed days to read than a
//! question waits for ([`LOAD_DAYS`]), which are then read in the background.
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
//! days. A year of the bench's 1,000,000 payments takes about 56 MiB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use sqlx::Row;

use super::analytics::{self, Baskets, Customers, FOLD_OVERLAP_MS, Filter, GroupBy, Sales};
use super::analytics_load::{Names, Source, day_of, day_start, load};
use super::analytics_rows::{self as rows, Block, Catalog, CustomerIds, Newness, View};
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
    /// Answers given from memory; questions SQL answered because a value did not fit or a tie
    /// needed an id; and questions SQL answered while a long period was read in the background.
    pub answers: u64,
    pub declined: u64,
    pub deferred: u64,
    /// Merchants whose days are being read in the background.
    pub filling: usize,
}

/// What this instance's cache holds now.
pub fn stats(db: &Db) -> Stats {
    let Some(cache) = crate::store::cache::peek_instance::<AnalyticsCache>(db) else { return Stats::default() };
    let slots = cache.slots.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Stats {
        merchants: slots.len(),
        answers: cache.answers.load(Ordering::Relaxed),
        declined: cache.declined.load(Ordering::Relaxed),
        deferred: cache.deferred.load(Ordering::Relaxed),
        ..Stats::default()
    };
    for slot in slots.values() {
        s.days += slot.size.days;
        s.payments += slot.size.payments;
        s.bytes += slot.size.bytes;
        s.filling += usize::from(slot.filling);
    }
    s
}

/// Empties this instance's cache (`bench analytics` times each route's first question cold).
pub fn clear(db: &Db) {
    if let Some(cache) = crate::store::cache::peek_instance::<AnalyticsCache>(db) {
        cache.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        metrics::gauge!("omamori_analytics_cache_bytes").set(0.0);
    }
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

/// `plan` cut to the days whose first visits the fold has finished (`folded_to`, the merchant's
/// `customer_folds` row): a day's first visits are all in `customer_firsts` once the fold has
/// read [`FOLD_OVERLAP_MS`] past its end (it rereads that much each time, for late commits), and
/// an inserted first visit moves no generation, so a day cached before would keep a stale
/// new-or-returning flag. A fold that lags (an instance just started after a long stop) only
/// sends more of the period to SQL. No fold yet: nothing from memory.
fn within_fold(plan: Plan, folded_to: Option<i64>) -> Option<Plan> {
    let complete = day_of(folded_to? - FOLD_OVERLAP_MS);
    let cached_end = plan.cached_end.min(complete);
    (cached_end > plan.first).then(|| Plan { cached_end, live_from: day_start(cached_end), ..plan })
}

/// The instance's cache: merchants by id, each behind a lock of its own (a load holds it across
/// its query, so one merchant's days are read once however many ask at once).
pub struct AnalyticsCache {
    cap_bytes: usize,
    slots: std::sync::Mutex<HashMap<MerchantId, Slot>>,
    tick: AtomicU64,
    answers: AtomicU64,
    declined: AtomicU64,
    deferred: AtomicU64,
}

struct Slot {
    days: Arc<tokio::sync::Mutex<MerchantDays>>,
    used: u64,
    size: Size,
    /// Whether days are being read in the background for a long period.
    filling: bool,
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

    fn names(&mut self) -> Names<'_> {
        Names { catalog: &mut self.catalog, customers: &mut self.customers }
    }
}

fn instance(db: &Db, cache_mib: u32) -> Arc<AnalyticsCache> {
    crate::store::cache::per_instance(db, || AnalyticsCache {
        cap_bytes: cache_mib as usize * 1024 * 1024,
        slots: std::sync::Mutex::new(HashMap::new()),
        tick: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        declined: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
    })
}

impl AnalyticsCache {
    fn filling(&self, id: &MerchantId) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(id).is_some_and(|s| s.filling)
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn merchant(&self, id: &MerchantId, tick: u64) -> Arc<tokio::sync::Mutex<MerchantDays>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(id.clone()).or_insert_with(|| Slot {
            days: Arc::new(tokio::sync::Mutex::new(MerchantDays::default())),
            used: tick,
            size: Size::default(),
            filling: false,
        });
        slot.used = tick;
        slot.days.clone()
    }

    /// Records a merchant's size after a load, then evicts down to the cap: the least recently
    /// used other merchants first, then this merchant's least recently used days.
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
                slots.insert(id.clone(), Slot { days: days.clone(), used, size, filling: false });
            }
        }
        let total: usize = slots.values().map(|s| s.size.bytes).sum();
        metrics::gauge!("omamori_analytics_cache_bytes").set(total as f64);
    }

    /// Starts reading a long period's closed days in the background, newest first, [`LOAD_DAYS`]
    /// at a time (the merchant's lock is taken per chunk, so questions go on between them); not
    /// when a fill already runs, or when the period would not fit under the cap.
    fn fill(self: &Arc<Self>, db: &Db, merchant: &MerchantId, days: Arc<tokio::sync::Mutex<MerchantDays>>, plan: Plan) {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = slots.get_mut(merchant).filter(|s| Arc::ptr_eq(&s.days, &days)) else { return };
            let per_day = slot.size.bytes.checked_div(slot.size.days).unwrap_or(0);
            if slot.filling || per_day * (plan.cached_end - plan.first) as usize > self.cap_bytes {
                return;
            }
            slot.filling = true;
        }
        let (cache, db, merchant) = (self.clone(), db.clone(), merchant.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.fill_days(&db, &merchant, &days, plan).await {
                tracing::warn!(error = %crate::store::describe_error(&e), "analytics days could not be read ahead");
            }
            let mut slots = cache.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get_mut(&merchant) {
                slot.filling = false;
            }
        });
    }

    async fn fill_days(
        &self,
        db: &Db,
        merchant: &MerchantId,
        days: &Arc<tokio::sync::Mutex<MerchantDays>>,
        plan: Plan,
    ) -> Result<(), sqlx::Error> {
        let mut end = plan.cached_end;
        while end > plan.first {
            let chunk = Plan { first: (end - FILL_DAYS).max(plan.first), cached_end: end, live_from: day_start(end) };
            let mut m = days.lock().await;
            let mut tx = snapshot(db).await?;
            let generations = generations(&mut tx, merchant, chunk).await?;
            let fitted =
                refresh_days(&mut tx, &mut m, db.backend(), merchant, chunk, &generations, self.next_tick()).await?;
            tx.commit().await?;
            self.settle(merchant, days, &mut m);
            if !fitted {
                return Ok(());
            }
            end = chunk.first;
        }
        Ok(())
    }
}

/// A read-only transaction with one snapshot for every statement in it.
async fn snapshot(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match db.backend() {
        Backend::Postgres => db.pool().begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await,
        Backend::Sqlite => db.pool().begin().await,
    }
}

/// The most closed days, and payments on them, a question reads before it answers (a day after
/// the close, a day a refund changed; about a week of the bench's business). A question missing
/// more is answered by SQL while `AnalyticsCache::fill` reads them in the background, as
/// reading a month of the bench's payments takes longer than SQL takes to answer about it.
pub const LOAD_DAYS: i64 = 31;
pub const LOAD_PAYMENTS: i64 = 20_000;
/// Days read per statement in the background, newest first (the merchant's lock is taken for
/// each, so questions go on between them).
pub const FILL_DAYS: i64 = 31;

/// What a question found.
enum Built {
    View(View),
    /// More than [`LOAD_DAYS`] closed days, or [`LOAD_PAYMENTS`] payments, to read first.
    TooFar,
    /// A value that does not fit in memory, or a tie only SQL breaks.
    Unfit,
}

/// The rows of a question, with the cache brought up to date under the merchant's lock.
async fn view(ask: &Ask<'_>) -> Result<Option<(Arc<AnalyticsCache>, View)>, sqlx::Error> {
    let f = ask.filter;
    if ask.cache_mib == 0 || f.stores.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let Some(plan) = plan(f, ask.now) else { return Ok(None) };
    let folded_to: Option<i64> = sqlx::query_scalar("SELECT folded_to FROM customer_folds WHERE merchant_id = $1")
        .bind(&f.merchant_id)
        .fetch_optional(ask.db.pool())
        .await?;
    let Some(plan) = within_fold(plan, folded_to) else { return Ok(None) };
    let cache = instance(ask.db, ask.cache_mib);
    let tick = cache.next_tick();
    let days = cache.merchant(&f.merchant_id, tick);
    // While a long period is read in the background, SQL answers rather than wait for it.
    let mut m = match days.try_lock() {
        Ok(m) => m,
        Err(_) if cache.filling(&f.merchant_id) => {
            cache.deferred.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Err(_) => days.lock().await,
    };
    // One snapshot for the generations and every row read with them.
    let mut tx = snapshot(ask.db).await?;
    let built = build_view(&mut tx, &mut m, ask.db.backend(), f, plan, tick).await?;
    tx.commit().await?;
    cache.settle(&f.merchant_id, &days, &mut m);
    drop(m);
    match built {
        Built::View(v) => return Ok(Some((cache, v))),
        Built::TooFar => {
            cache.deferred.fetch_add(1, Ordering::Relaxed);
            cache.fill(ask.db, &f.merchant_id, days, plan);
        }
        Built::Unfit => {
            cache.declined.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(None)
}

async fn build_view(
    conn: &mut Conn,
    m: &mut MerchantDays,
    backend: Backend,
    f: &Filter,
    plan: Plan,
    tick: u64,
) -> Result<Built, sqlx::Error> {
    let generations = generations(conn, &f.merchant_id, plan).await?;
    let stale: Vec<i64> = stale_days(m, plan, &generations).collect();
    if let (Some(&first), Some(&last)) = (stale.first(), stale.last())
        && (stale.len() as i64 > LOAD_DAYS
            || payments_between(conn, &f.merchant_id, day_start(first), day_start(last + 1)).await? > LOAD_PAYMENTS)
    {
        return Ok(Built::TooFar);
    }
    if !refresh_days(conn, m, backend, &f.merchant_id, plan, &generations, tick).await? {
        return Ok(Built::Unfit);
    }
    let Some(newness) = newness(conn, m, f, plan, generations.get(&-1).copied().unwrap_or(0)).await? else {
        return Ok(Built::Unfit);
    };
    let mut live = Vec::new();
    if plan.live_from < f.end {
        let today = Filter { start: plan.live_from, ..f.clone() };
        let Some(blocks) = load(conn, backend, &Source::Live(&today), m.names()).await? else {
            return Ok(Built::Unfit);
        };
        live = blocks.into_values().collect();
    }
    let stores = f.stores.as_ref().map(|list| {
        let mut mask = vec![false; m.catalog.stores.len()];
        for s in list.iter().filter_map(|s| m.catalog.stores.get(s.as_str())) {
            mask[s as usize] = true;
        }
        mask
    });
    let mut cached = Vec::new();
    for (_, d) in m.days.range_mut(plan.first..plan.cached_end) {
        d.used = tick;
        cached.push(d.block.clone());
    }
    let customers = m.customers.len();
    Ok(Built::View(View { cached, live, catalog: m.catalog.clone(), customers, stores, newness }))
}

/// How many payments the merchant has in `[start, end)` (an index range, counted).
async fn payments_between(conn: &mut Conn, merchant: &MerchantId, start: i64, end: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3")
        .bind(merchant)
        .bind(start)
        .bind(end)
        .fetch_one(&mut *conn)
        .await
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

/// The plan's closed days that are not cached, or whose generation moved since they were read.
fn stale_days<'a>(
    m: &'a MerchantDays,
    plan: Plan,
    generations: &'a HashMap<i64, i64>,
) -> impl Iterator<Item = i64> + 'a {
    (plan.first..plan.cached_end).filter(move |day| {
        let generation = generations.get(day).copied().unwrap_or(0);
        m.days.get(day).is_none_or(|d| d.generation != generation)
    })
}

/// Reads the plan's stale days, a run of consecutive days per statement; `false` when a row
/// does not fit in memory.
async fn refresh_days(
    conn: &mut Conn,
    m: &mut MerchantDays,
    backend: Backend,
    merchant: &MerchantId,
    plan: Plan,
    generations: &HashMap<i64, i64>,
    tick: u64,
) -> Result<bool, sqlx::Error> {
    let stale: Vec<i64> = stale_days(m, plan, generations).collect();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for day in stale {
        match runs.last_mut() {
            Some((_, end)) if *end == day => *end += 1,
            _ => runs.push((day, day + 1)),
        }
    }
    for (first, end) in runs {
        let source = Source::Closed { merchant, start: day_start(first), end: day_start(end) };
        let Some(mut blocks) = load(conn, backend, &source, m.names()).await? else { return Ok(false) };
        for day in first..end {
            let block = blocks.remove(&day).unwrap_or_else(|| Block::new(day_start(day)));
            let generation = generations.get(&day).copied().unwrap_or(0);
            m.days.insert(day, Day { block: Arc::new(block), generation, used: tick });
        }
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
        // The fold decides too: a day is cached only once the fold has read FOLD_OVERLAP_MS past it.
        let p = plan(&filter(start, end), later).unwrap();
        assert_eq!(within_fold(p, None), None);
        assert_eq!(within_fold(p, Some(day_start(today) + FOLD_OVERLAP_MS)), Some(p));
        let lagging = within_fold(p, Some(day_start(today) + FOLD_OVERLAP_MS - 1)).unwrap();
        assert_eq!((lagging.cached_end, lagging.live_from), (today - 1, day_start(today - 1)));
        assert_eq!(within_fold(p, Some(day_start(p.first) + FOLD_OVERLAP_MS)), None);
    }
}
