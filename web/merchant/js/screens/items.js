// Items: what sells, by category and by item (sku), from the baskets the tills send.

import { h, clear } from '/app/js/dom.js';
import { t, yen } from '/app/js/i18n.js';
import { barChart } from '../chart.js';
import { count, filters, money, period, table } from '../ui.js';
import { sales } from './sales.js';

const state = { store_id: '', from: null, to: null };
const TOP = 50;

export function render(ctx) {
  period(state, 30);
  const box = h('div', { 'aria-live': 'polite' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.items.title')),
    h('p', { class: 'hint' }, t('merchant.items.lead')),
    filters(ctx, state, { onChange: () => load(ctx, box) }), box);
  load(ctx, box);
}

async function load(ctx, box) {
  const base = { from: state.from, to: state.to, store_id: state.store_id };
  let categories, skus;
  try {
    [categories, skus] = await Promise.all([sales({ ...base, group_by: 'category' }), sales({ ...base, group_by: 'sku' })]);
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  const cats = [...categories.items].sort((a, b) => b.net - a.net);
  const items = [...skus.items].sort((a, b) => b.net - a.net).slice(0, TOP);
  const columns = [`#${t('merchant.payments')}`, `#${t('merchant.gross')}`, `#${t('merchant.refunds')}`, `#${t('merchant.net')}`,
    `#${t('merchant.customers')}`];
  const figures = (i) => [count(i.payments), yen(i.gross), yen(i.refunds), yen(i.net), count(i.customers)];
  box.append(
    h('h2', {}, t('merchant.items.bycategory')),
    cats.length ? h('figure', { class: 'chart' },
      h('figcaption', {}, t('merchant.items.bycategory')),
      barChart({
        label: t('merchant.items.chart.label', { n: cats.length }),
        labels: cats.slice(0, 12).map((c) => String(c.key ?? t('merchant.nocategory')).slice(0, 10)),
        series: [{ name: t('merchant.net'), values: cats.slice(0, 12).map((c) => c.net) }],
        format: yen,
      })) : null,
    table([t('merchant.category'), ...columns], cats.map((i) => [i.key ?? t('merchant.nocategory'), ...figures(i)])),
    h('h2', {}, t('merchant.items.top', { n: TOP })),
    table([t('merchant.sku'), t('merchant.item'), ...columns, `#${t('merchant.avg')}`],
      items.map((i) => [i.key, i.name ?? '', ...figures(i), money(i.average_ticket)])));
}
