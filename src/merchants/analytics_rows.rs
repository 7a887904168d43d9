//! One merchant's payments in compact form, and the analytics figures computed from them in
//! memory (`analytics_cache` keeps closed days of these; the rest of a period is read live).
//!
//! A payment is a few numbers (its moment in the day, amount, customer, store, first-visit flags)
//! and its basket lines two (the item, the line's yen); every text (customer references, stores,
//! skus, categories, item names) is a number in the merchant's [`Catalog`] or [`CustomerIds`].
//! The figures are exactly those of the SQL in `analytics`, which stays the reference (the API
//! tests compare the two): the same groups and keys, the same privacy rule
//! ([`SalesFigures::of`], [`Customers::of`]), texts compared by their bytes as SQLite and
//! PostgreSQL's `C` collation compare them. Where memory cannot decide as SQL would (two first
//! visits in one millisecond), a figure answers `None` and the caller asks SQL.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use super::analytics::{
    self, Baskets, Counts, Customers, GroupBy, MAX_PAIRS, Pair, Sales, SalesFigures, SalesRow, Visitor,
};

/// A payment without a customer reference.
pub const NO_CUSTOMER: u32 = u32::MAX;
/// The payment is its customer's first at the merchant (`customer_firsts`, store `''`).
pub const FIRST_AT_MERCHANT: u8 = 1;
/// The payment is its customer's first at its store.
pub const FIRST_AT_STORE: u8 = 2;
/// A row read live for one question: new to the stores it asks about (SQL decided).
pub const NEW_HERE: u8 = 4;

/// Texts by number, append-only: a number never changes its meaning.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    texts: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Interner {
    pub fn get(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn text(&self, id: u32) -> &str {
        self.texts.get(id as usize).map_or("", |t| t)
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The number of `text`, given a new one if needed (`None` past `u32` numbers).
    fn add(&mut self, text: &str) -> Option<u32> {
        if let Some(id) = self.get(text) {
            return Some(id);
        }
        let id = u32::try_from(self.texts.len()).ok().filter(|&i| i != u32::MAX)?;
        let text: Arc<str> = text.into();
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        Some(id)
    }

    /// About what it takes in memory: each text, its shared header, the list and map entries.
    fn bytes(&self) -> usize {
        self.texts.iter().map(|t| t.len() + 16 + 16 + 40).sum()
    }
}

/// An item as a basket line names it: sku, category (`""`: none) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    pub sku: u32,
    pub category: u32,
    pub name: u32,
}

/// The texts of one merchant's rows other than customers: stores, skus, categories, item names.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub stores: Interner,
    pub skus: Interner,
    pub categories: Interner,
    pub names: Interner,
    variants: Vec<Variant>,
    variant_ids: HashMap<Variant, u32>,
}

impl Catalog {
    pub fn variant(&self, id: u32) -> Variant {
        self.variants.get(id as usize).copied().unwrap_or(Variant { sku: 0, category: 0, name: 0 })
    }

    pub fn bytes(&self) -> usize {
        let own = self.variants.len() * (12 + 12 + 12);
        own + self.stores.bytes() + self.skus.bytes() + self.categories.bytes() + self.names.bytes()
    }
}

/// The number of a store in a shared catalog; the catalog is copied only for a new store while
/// another holds it.
pub fn store_id(catalog: &mut Arc<Catalog>, store: &str) -> Option<u32> {
    match catalog.stores.get(store) {
        Some(id) => Some(id),
        None => Arc::make_mut(catalog).stores.add(store),
    }
}

/// The number of a sku, as [`store_id`].
pub fn sku_id(catalog: &mut Arc<Catalog>, sku: &str) -> Option<u32> {
    match catalog.skus.get(sku) {
        Some(id) => Some(id),
        None => Arc::make_mut(catalog).skus.add(sku),
    }
}

/// The number of a category (`""`: none), as [`store_id`].
pub fn category_id(catalog: &mut Arc<Catalog>, category: &str) -> Option<u32> {
    match catalog.categories.get(category) {
        Some(id) => Some(id),
        None => Arc::make_mut(catalog).categories.add(category),
    }
}

/// The number of a basket line's item, as [`store_id`].
pub fn variant_id(catalog: &mut Arc<Catalog>, sku: &str, category: &str, name: &str) -> Option<u32> {
    let known = (catalog.skus.get(sku), catalog.categories.get(category), catalog.names.get(name));
    if let (Some(sku), Some(category), Some(name)) = known
        && let Some(&id) = catalog.variant_ids.get(&Variant { sku, category, name })
    {
        return Some(id);
    }
    let c = Arc::make_mut(catalog);
    let v = Variant { sku: c.skus.add(sku)?, category: c.categories.add(category)?, name: c.names.add(name)? };
    if let Some(&id) = c.variant_ids.get(&v) {
        return Some(id);
    }
    let id = u32::try_from(c.variants.len()).ok()?;
    c.variants.push(v);
    c.variant_ids.insert(v, id);
    Some(id)
}

/// Customer references by number (never turned back into text: no figure shows one).
#[derive(Debug, Default)]
pub struct CustomerIds(HashMap<Box<str>, u32>);

impl CustomerIds {
    pub fn id(&mut self, customer_ref: &str) -> Option<u32> {
        if let Some(&id) = self.0.get(customer_ref) {
            return Some(id);
        }
        let id = u32::try_from(self.0.len()).ok().filter(|&i| i != NO_CUSTOMER)?;
        self.0.insert(customer_ref.into(), id);
        Some(id)
    }

    pub fn get(&self, customer_ref: &str) -> Option<u32> {
        self.0.get(customer_ref).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.0.keys().map(|k| k.len() + 16 + 4 + 12).sum()
    }
}

/// A refund's returned item, valued as the SQL values it: quantity × the highest unit amount of
/// the sku's lines in the payment, under the highest of their categories (`""`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returned {
    pub payment: u32,
    pub sku: u32,
    pub category: u32,
    pub value: i64,
}

/// One Tokyo day of a merchant's succeeded payments (or of those a live question reads), columns
/// side by side, in the order (time, id).
#[derive(Debug, Default)]
pub struct Block {
    /// The Tokyo midnight the moments count from (ms).
    pub start: i64,
    at: Vec<u32>,
    amount: Vec<i64>,
    customer: Vec<u32>,
    store: Vec<u32>,
    flags: Vec<u8>,
    /// The end of each payment's lines in `line_variant` (its first is the previous one's end).
    line_end: Vec<u32>,
    line_variant: Vec<u32>,
    line_gross: Vec<i64>,
    /// Payments refunded in part or in full: (payment, yen), in payment order.
    refunded: Vec<(u32, i64)>,
    returned: Vec<Returned>,
}

/// A payment to add to a [`Block`].
#[derive(Debug, Clone, Copy)]
pub struct NewPayment {
    pub created_at: i64,
    pub amount: i64,
    pub refunded: i64,
    pub customer: u32,
    pub store: u32,
    pub flags: u8,
}

impl Block {
    pub fn new(start: i64) -> Block {
        Block { start, ..Block::default() }
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Adds a payment of this day; `None` when its moment is not in the day.
    pub fn push_payment(&mut self, p: NewPayment) -> Option<u32> {
        let at = u32::try_from(p.created_at.checked_sub(self.start)?).ok().filter(|&a| i64::from(a) < DAY_MS)?;
        let index = u32::try_from(self.at.len()).ok()?;
        self.at.push(at);
        self.amount.push(p.amount);
        self.customer.push(p.customer);
        self.store.push(p.store);
        self.flags.push(p.flags);
        if p.refunded != 0 {
            self.refunded.push((index, p.refunded));
        }
        Some(index)
    }

    /// Adds a basket line of `payment`; lines come in payment order (`None` otherwise).
    pub fn push_line(&mut self, payment: u32, variant: u32, gross: i64) -> Option<()> {
        let payment = payment as usize;
        if payment >= self.at.len() || payment + 1 < self.line_end.len() {
            return None;
        }
        let count = u32::try_from(self.line_variant.len() + 1).ok()?;
        while self.line_end.len() <= payment {
            self.line_end.push(count - 1);
        }
        self.line_variant.push(variant);
        self.line_gross.push(gross);
        *self.line_end.last_mut()? = count;
        Some(())
    }

    pub fn push_returned(&mut self, r: Returned) {
        self.returned.push(r);
    }

    /// Closes the line index and gives back spare capacity: call once every row is in.
    pub fn finish(&mut self) {
        let count = self.line_variant.len() as u32;
        while self.line_end.len() < self.at.len() {
            self.line_end.push(count);
        }
        for v in [&mut self.amount, &mut self.line_gross] {
            v.shrink_to_fit();
        }
        for v in [&mut self.at, &mut self.customer, &mut self.store, &mut self.line_end, &mut self.line_variant] {
            v.shrink_to_fit();
        }
        self.flags.shrink_to_fit();
        self.refunded.shrink_to_fit();
        self.returned.shrink_to_fit();
    }

    /// What it takes in memory.
    pub fn bytes(&self) -> usize {
        let per_payment = 4 + 8 + 4 + 4 + 1 + 4;
        let per_line = 4 + 8;
        std::mem::size_of::<Block>()
            + self.at.capacity() * per_payment
            + self.line_variant.capacity() * per_line
            + self.refunded.capacity() * 16
            + self.returned.capacity() * std::mem::size_of::<Returned>()
    }

    fn lines(&self, i: usize) -> Range<usize> {
        let end = self.line_end.get(i).map_or(0, |&e| e as usize);
        let start = if i == 0 { 0 } else { self.line_end.get(i - 1).map_or(0, |&e| e as usize) };
        start.min(end)..end
    }
}

const DAY_MS: i64 = analytics::DAY_MS;

/// How a cached payment is told new to the stores asked about (a live one carries [`NEW_HERE`]).
#[derive(Debug, Clone)]
pub enum Newness {
    /// Every store: its customer's first payment at the merchant.
    Merchant,
    /// One store: its customer's first payment at that store.
    Store,
    /// Several stores: its customer's first at its store, and no earlier first at the others
    /// (each store's first visits: customer → moment).
    Among(Vec<(u32, Arc<HashMap<u32, i64>>)>),
}

/// The rows one question reads: cached days of its period, and the rest read live.
#[derive(Debug)]
pub struct View {
    pub cached: Vec<Arc<Block>>,
    pub live: Vec<Block>,
    pub catalog: Arc<Catalog>,
    /// How many customer numbers there are (every row's customer is below).
    pub customers: usize,
    /// Which stores count on cached days, by number (`None`: every store).
    pub stores: Option<Vec<bool>>,
    pub newness: Newness,
}

/// A payment of the question, as the figures see it.
struct Pay<'a> {
    at: i64,
    amount: i64,
    refunded: i64,
    customer: u32,
    store: u32,
    new: bool,
    variants: &'a [u32],
    gross: &'a [i64],
}

impl View {
    fn counts_store(&self, store: u32) -> bool {
        self.stores.as_ref().is_none_or(|s| s.get(store as usize).copied().unwrap_or(false))
    }

    /// Whether a cached payment is new; `None` when memory cannot tell (a tie SQL breaks by id).
    fn cached_new(&self, b: &Block, i: usize) -> Option<bool> {
        let flags = b.flags[i];
        match &self.newness {
            Newness::Merchant => Some(flags & FIRST_AT_MERCHANT != 0),
            Newness::Store => Some(flags & FIRST_AT_STORE != 0),
            Newness::Among(firsts) => {
                if flags & FIRST_AT_STORE == 0 {
                    return Some(false);
                }
                let (customer, at, own) = (b.customer[i], b.start + i64::from(b.at[i]), b.store[i]);
                for (_, first) in firsts.iter().filter(|(s, _)| *s != own) {
                    match first.get(&customer) {
                        Some(&t) if t < at => return Some(false),
                        Some(&t) if t == at => return None,
                        _ => {}
                    }
                }
                Some(true)
            }
        }
    }

    /// Calls `f` for every payment of the question; `None` if one's newness cannot be told.
    fn each(&self, mut f: impl FnMut(&Pay)) -> Option<()> {
        for b in &self.cached {
            self.each_of(b, false, &mut f)?;
        }
        for b in &self.live {
            self.each_of(b, true, &mut f)?;
        }
        Some(())
    }

    fn each_of(&self, b: &Block, live: bool, f: &mut impl FnMut(&Pay)) -> Option<()> {
        let mut refunds = b.refunded.iter().peekable();
        for i in 0..b.len() {
            let refunded = match refunds.peek() {
                Some(&&(k, yen)) if k as usize == i => {
                    refunds.next();
                    yen
                }
                _ => 0,
            };
            if !live && !self.counts_store(b.store[i]) {
                continue;
            }
            let new = if live { b.flags[i] & NEW_HERE != 0 } else { self.cached_new(b, i)? };
            let lines = b.lines(i);
            f(&Pay {
                at: b.start + i64::from(b.at[i]),
                amount: b.amount[i],
                refunded,
                customer: b.customer[i],
                store: b.store[i],
                new,
                variants: &b.line_variant[lines.clone()],
                gross: &b.line_gross[lines],
            });
        }
        Some(())
    }

    /// Calls `f` for every item the question's refunds returned.
    fn each_returned(&self, mut f: impl FnMut(&Returned)) {
        for (b, live) in self.cached.iter().map(|b| (b.as_ref(), false)).chain(self.live.iter().map(|b| (b, true))) {
            for r in &b.returned {
                let store = b.store.get(r.payment as usize).copied().unwrap_or(u32::MAX);
                if live || self.counts_store(store) {
                    f(r);
                }
            }
        }
    }
}

/// How many distinct customers each group has, from (group << 32 | customer) pairs.
fn distinct_per_group(pairs: &mut Vec<u64>, groups: usize) -> Vec<i64> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = vec![0i64; groups];
    for p in pairs.iter() {
        if let Some(n) = out.get_mut((p >> 32) as usize) {
            *n += 1;
        }
    }
    out
}

fn pair(group: usize, customer: u32) -> u64 {
    ((group as u64) << 32) | u64::from(customer)
}

/// The period's figures, whatever the breakdown.
fn totals(view: &View) -> Option<Counts> {
    let mut c = Counts::default();
    let mut seen = vec![false; view.customers];
    view.each(|p| {
        c.payments += 1;
        c.gross = c.gross.saturating_add(p.amount);
        c.refunds = c.refunds.saturating_add(p.refunded);
        if let Some(s) = seen.get_mut(p.customer as usize).filter(|s| !**s) {
            *s = true;
            c.customers += 1;
        }
        c.new_customers += i64::from(p.new);
    })?;
    Some(c)
}

/// `GET /v1/merchant/analytics/sales` from memory (`None`: ask SQL).
pub fn sales(view: &View, group: GroupBy, min: i64) -> Option<Sales> {
    let totals = totals(view)?;
    let mut items = if group.by_item() { item_rows(view, group, min)? } else { payment_rows(view, group, min)? };
    analytics::sort_rows(group, &mut items);
    Some(Sales { min_customers: min, items, totals: SalesFigures::of(totals, min) })
}

/// A breakdown of payments by hour, day, weekday and hour, or store.
fn payment_rows(view: &View, group: GroupBy, min: i64) -> Option<Vec<SalesRow>> {
    let mut index: HashMap<i64, usize> = HashMap::new();
    let (mut keys, mut counts, mut pairs) = (Vec::new(), Vec::<Counts>::new(), Vec::new());
    view.each(|p| {
        let key = analytics::time_key(group, p.at).unwrap_or(i64::from(p.store));
        let g = *index.entry(key).or_insert_with(|| {
            keys.push(key);
            counts.push(Counts::default());
            keys.len() - 1
        });
        let c = &mut counts[g];
        c.payments += 1;
        c.gross = c.gross.saturating_add(p.amount);
        c.refunds = c.refunds.saturating_add(p.refunded);
        c.new_customers += i64::from(p.new);
        if p.customer != NO_CUSTOMER {
            pairs.push(pair(g, p.customer));
        }
    })?;
    let customers = distinct_per_group(&mut pairs, keys.len());
    let rows = keys.iter().zip(counts).zip(customers).map(|((&k, mut c), n)| {
        c.customers = n;
        let key = match group {
            GroupBy::Store => view.catalog.stores.text(k as u32).to_string(),
            _ => analytics::time_key_text(group, k),
        };
        SalesRow { key: Some(key), name: None, figures: SalesFigures::of(c, min) }
    });
    Some(rows.collect())
}

/// What a breakdown by item or category gathers per group.
#[derive(Default, Clone)]
struct ItemGroup {
    counts: Counts,
    present: bool,
    /// The payment last counted (each payment counts once per group).
    last: usize,
    /// The least name of the group's lines (skus), by bytes.
    name: Option<u32>,
}

/// A breakdown by category or sku: each basket line's yen, and the items refunds returned.
fn item_rows(view: &View, group: GroupBy, min: i64) -> Option<Vec<SalesRow>> {
    let catalog = &view.catalog;
    let by_sku = group == GroupBy::Sku;
    let n = if by_sku { catalog.skus.len() } else { catalog.categories.len() };
    let mut groups = vec![ItemGroup::default(); n];
    let (mut pairs, mut new_pairs, mut serial) = (Vec::new(), Vec::new(), 0usize);
    view.each(|p| {
        serial += 1;
        for (&v, &gross) in p.variants.iter().zip(p.gross) {
            let item = catalog.variant(v);
            let g = if by_sku { item.sku } else { item.category } as usize;
            let Some(at) = groups.get_mut(g) else { continue };
            at.present = true;
            at.counts.gross = at.counts.gross.saturating_add(gross);
            if at.last != serial {
                at.last = serial;
                at.counts.payments += 1;
            }
            if by_sku && at.name.is_none_or(|m| m != item.name && catalog.names.text(item.name) < catalog.names.text(m))
            {
                at.name = Some(item.name);
            }
            if p.customer != NO_CUSTOMER {
                pairs.push(pair(g, p.customer));
                if p.new {
                    new_pairs.push(pair(g, p.customer));
                }
            }
        }
    })?;
    view.each_returned(|r| {
        let g = if by_sku { r.sku } else { r.category } as usize;
        if let Some(at) = groups.get_mut(g) {
            at.counts.refunds = at.counts.refunds.saturating_add(r.value);
        }
    });
    let customers = distinct_per_group(&mut pairs, n);
    let new_customers = distinct_per_group(&mut new_pairs, n);
    let mut rows = Vec::new();
    for (g, at) in groups.into_iter().enumerate().filter(|(_, at)| at.present) {
        let mut c = at.counts;
        (c.customers, c.new_customers) = (customers[g], new_customers[g]);
        let (key, name) = if by_sku {
            (Some(catalog.skus.text(g as u32).to_string()), at.name.map(|m| catalog.names.text(m).to_string()))
        } else {
            let category = catalog.categories.text(g as u32);
            ((!category.is_empty()).then(|| category.to_string()), None)
        };
        rows.push(SalesRow { key, name, figures: SalesFigures::of(c, min) });
    }
    Some(rows)
}

/// `GET /v1/merchant/analytics/customers` from memory (`None`: ask SQL).
pub fn customers(view: &View, min: i64) -> Option<Customers> {
    let n = view.customers;
    let (mut visits, mut first, mut last, mut new) =
        (vec![0i64; n], vec![i64::MAX; n], vec![i64::MIN; n], vec![false; n]);
    view.each(|p| {
        let c = p.customer as usize;
        if c < n {
            visits[c] += 1;
            first[c] = first[c].min(p.at);
            last[c] = last[c].max(p.at);
            new[c] |= p.new;
        }
    })?;
    let visitors: Vec<Visitor> = (0..n)
        .filter(|&c| visits[c] > 0)
        .map(|c| Visitor { visits: visits[c], first: first[c], last: last[c], returning: !new[c] })
        .collect();
    Some(Customers::of(&visitors, min))
}

/// Each sku's place among the catalog's skus in byte order (how SQL orders and compares them).
fn sku_ranks(catalog: &Catalog) -> (Vec<u32>, Vec<u32>) {
    let mut by_rank: Vec<u32> = (0..catalog.skus.len() as u32).collect();
    by_rank.sort_by(|&a, &b| catalog.skus.text(a).cmp(catalog.skus.text(b)));
    let mut rank = vec![0u32; by_rank.len()];
    for (r, &sku) in by_rank.iter().enumerate() {
        rank[sku as usize] = r as u32;
    }
    (rank, by_rank)
}

/// A pair of skus (by rank) and how often it was bought together.
struct Together {
    pair: u64,
    baskets: i64,
    customers: i64,
}

/// Every pair bought together: (a rank << 32 | b rank, customer) per basket, sorted.
fn pair_entries(view: &View, rank: &[u32], per_sku: &mut [i64], total: &mut i64) -> Option<Vec<(u64, u32)>> {
    let mut entries = Vec::new();
    let mut skus: Vec<u32> = Vec::new();
    view.each(|p| {
        if p.variants.is_empty() {
            return;
        }
        *total += 1;
        skus.clear();
        skus.extend(p.variants.iter().filter_map(|&v| rank.get(view.catalog.variant(v).sku as usize).copied()));
        skus.sort_unstable();
        skus.dedup();
        for (x, &a) in skus.iter().enumerate() {
            if let Some(n) = per_sku.get_mut(a as usize) {
                *n += 1;
            }
            for &b in &skus[x + 1..] {
                entries.push(((u64::from(a) << 32) | u64::from(b), p.customer));
            }
        }
    })?;
    entries.sort_unstable();
    Some(entries)
}

/// `GET /v1/merchant/analytics/baskets` from memory (`None`: ask SQL).
pub fn baskets(view: &View, min: i64) -> Option<Baskets> {
    let (rank, by_rank) = sku_ranks(&view.catalog);
    let (mut per_rank, mut total) = (vec![0i64; rank.len()], 0i64);
    let entries = pair_entries(view, &rank, &mut per_rank, &mut total)?;
    let mut found: Vec<Together> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let pair = entries[i].0;
        let (mut j, mut customers, mut previous) = (i, 0i64, None);
        while j < entries.len() && entries[j].0 == pair {
            let c = entries[j].1;
            if c != NO_CUSTOMER && previous != Some(c) {
                customers += 1;
                previous = Some(c);
            }
            j += 1;
        }
        if customers >= min {
            found.push(Together { pair, baskets: (j - i) as i64, customers });
        }
        i = j;
    }
    found.sort_by(|x, y| y.baskets.cmp(&x.baskets).then(x.pair.cmp(&y.pair)));
    found.truncate(MAX_PAIRS as usize);
    let sku = |r: u64| view.catalog.skus.text(by_rank.get(r as usize).copied().unwrap_or(0)).to_string();
    let share = |r: u64| per_rank.get(r as usize).copied().unwrap_or(0);
    let pairs = found
        .iter()
        .map(|t| {
            let (a, b) = (t.pair >> 32, t.pair & 0xffff_ffff);
            Pair {
                a_sku: sku(a),
                b_sku: sku(b),
                baskets: t.baskets,
                customers: t.customers,
                lift: analytics::lift(t.baskets, share(a), share(b), total),
            }
        })
        .collect();
    Some(Baskets { min_customers: min, pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two payments of one day: a basket of tea twice and a rice ball, then one without a basket.
    fn day() -> (Arc<Catalog>, Block) {
        let mut catalog = Arc::new(Catalog::default());
        let store = store_id(&mut catalog, "sto_a").unwrap();
        let tea = variant_id(&mut catalog, "TEA", "drinks", "Tea").unwrap();
        let oni = variant_id(&mut catalog, "ONI", "", "Rice ball").unwrap();
        let mut b = Block::new(0);
        let p =
            NewPayment { created_at: 1_000, amount: 460, refunded: 150, customer: 0, store, flags: FIRST_AT_MERCHANT };
        let first = b.push_payment(p).unwrap();
        for (v, gross) in [(tea, 150), (oni, 160), (tea, 150)] {
            b.push_line(first, v, gross).unwrap();
        }
        let sku = catalog.skus.get("TEA").unwrap();
        let category = catalog.categories.get("drinks").unwrap();
        b.push_returned(Returned { payment: first, sku, category, value: 150 });
        b.push_payment(NewPayment { created_at: 2_000, amount: 999, refunded: 0, customer: 1, flags: 0, ..p }).unwrap();
        b.finish();
        (catalog, b)
    }

    fn view(catalog: Arc<Catalog>, b: Block) -> View {
        View {
            cached: vec![Arc::new(b)],
            live: vec![],
            catalog,
            customers: 2,
            stores: None,
            newness: Newness::Merchant,
        }
    }

    #[test]
    fn lines_belong_to_their_payment_and_come_in_order() {
        let (_, mut b) = day();
        assert_eq!((b.lines(0), b.lines(1)), (0..3, 3..3));
        // A line for an earlier payment than the last one given is refused, not misfiled.
        assert_eq!(b.push_line(0, 0, 1), None);
        let before_the_day = NewPayment { created_at: -1, amount: 1, refunded: 0, customer: 0, store: 0, flags: 0 };
        assert_eq!(b.push_payment(before_the_day), None);
    }

    #[test]
    fn figures_count_payments_once_per_group_and_refunds_against_items() {
        let (catalog, b) = day();
        let sales = sales(&view(catalog.clone(), b), GroupBy::Sku, 1).unwrap();
        assert_eq!((sales.totals.payments, sales.totals.gross, sales.totals.refunds), (2, 1459, 150));
        let tea = sales.items.iter().find(|r| r.key.as_deref() == Some("TEA")).unwrap();
        assert_eq!((tea.figures.payments, tea.figures.gross, tea.figures.refunds), (1, 300, 150));
        assert_eq!(tea.name.as_deref(), Some("Tea"));
        let (catalog, b) = day();
        let by_category = sales_of(&view(catalog, b), GroupBy::Category);
        let keys: Vec<Option<&str>> = by_category.items.iter().map(|r| r.key.as_deref()).collect();
        assert_eq!(keys, vec![None, Some("drinks")], "by net (rice balls kept 160, tea 150); uncategorised is null");
    }

    fn sales_of(v: &View, group: GroupBy) -> Sales {
        sales(v, group, 1).unwrap()
    }

    #[test]
    fn a_first_visit_tied_with_another_store_s_is_left_to_sql() {
        let (catalog, mut b) = day();
        b.flags[0] = FIRST_AT_STORE;
        let other = Arc::new(HashMap::from([(0u32, 1_000i64)]));
        let mut v = view(catalog, b);
        v.newness = Newness::Among(vec![(0, Arc::new(HashMap::new())), (7, other)]);
        assert_eq!(customers(&v, 1), None, "the same millisecond at two stores: only the ids decide");
        if let Newness::Among(firsts) = &mut v.newness {
            firsts[1].1 = Arc::new(HashMap::from([(0u32, 999i64)]));
        }
        assert_eq!(customers(&v, 1).unwrap().new_customers, Some(0), "an earlier first elsewhere: returning");
    }
}
