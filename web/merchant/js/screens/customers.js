// Customers: how many shoppers came, came back and how often, and which items go together.
// Shoppers are counted by `customer_ref`, a pseudonym for this merchant alone; any figure that
// rests on too few shoppers is withheld by the server (null), so that no one can be singled out.

import { h, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { count, filters, kpis, period, query, share, table } from '../ui.js';

const state = { store_id: '', from: null, to: null };

export function render(ctx) {
  period(state, 90);
  const box = h('div', { 'aria-live': 'polite' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.customers.title')),
    filters(ctx, state, { onChange: () => load(ctx, box) }), box);
  load(ctx, box);
}

async function load(ctx, box) {
  const q = query({ from: state.from, to: state.to, store_id: state.store_id });
  let c, b;
  try {
    [c, b] = await Promise.all([
      get(`/v1/merchant/analytics/customers${q}`).then((r) => r.data),
      get(`/v1/merchant/analytics/baskets${q}`).then((r) => r.data),
    ]);
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  const median = c.median_days_between_visits;
  box.append(
    h('p', { class: 'hint' }, t('merchant.customers.privacy', { n: c.min_customers })),
    kpis([
      [t('merchant.customers'), count(c.customers)], [t('merchant.new'), count(c.new_customers)],
      [t('merchant.returning'), count(c.returning_customers)], [t('merchant.repeat'), share(c.repeat_rate)],
      [t('merchant.median'), median === null || median === undefined ? t('merchant.withheld') : t('merchant.days', { n: median })],
    ]),
    h('h2', {}, t('merchant.customers.visits')),
    table([t('merchant.visits'), `#${t('merchant.customers')}`], (c.visits ?? []).map((v) => [String(v.visits), count(v.customers)])),
    h('h2', {}, t('merchant.baskets.title')),
    h('p', { class: 'hint' }, t('merchant.baskets.lead', { n: b.min_customers })),
    table([t('merchant.baskets.a'), t('merchant.baskets.b'), `#${t('merchant.baskets.count')}`, `#${t('merchant.customers')}`,
      `#${t('merchant.baskets.lift')}`],
    (b.pairs ?? []).map((p) => [p.a_sku, p.b_sku, count(p.baskets), count(p.customers), Number(p.lift).toFixed(2)])));
}
