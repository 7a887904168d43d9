// Settlements: one per day closed at midnight in Japan, what was paid in, refunded, the fee,
// what is paid out (or carried over when a day is negative), and each day's statement with every
// payment and refund line, also as CSV. A closed settlement never changes.

import { h, clear } from '/app/js/dom.js';
import { t, yen } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { at, count, table } from '../ui.js';
import { storeName } from './sales.js';

export function render(ctx) {
  const box = h('div', { 'aria-live': 'polite' });
  const statement = h('section', { class: 'statement', 'aria-live': 'polite' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.settlements.title')),
    h('p', { class: 'hint' }, t('merchant.settlements.lead')), box, statement);
  load(ctx, box, statement);
}

async function load(ctx, box, statement) {
  let items;
  try {
    items = (await get('/v1/merchant/settlements')).data.items;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  box.append(table([t('merchant.col.date'), `#${t('merchant.payments')}`, `#${t('merchant.gross')}`, `#${t('merchant.refunds')}`,
    `#${t('merchant.fee')}`, `#${t('merchant.carried')}`, `#${t('merchant.netpaid')}`, t('merchant.col.status'), ''],
  items.map((s) => [s.date, count(s.payments), yen(s.gross), yen(s.refunds), yen(s.fee), yen(s.carried_over), yen(s.net),
    t(`merchant.settlement.${s.status}`),
    h('button', { type: 'button', class: 'small secondary', onClick: () => open(ctx, s.settlement_id, statement) },
      t('merchant.settlements.open', { date: s.date }))])));
}

async function open(ctx, id, statement) {
  let s;
  try {
    s = (await get(`/v1/merchant/settlements/${encodeURIComponent(id)}`)).data;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(statement);
  const heading = h('h2', { tabindex: -1 }, t('merchant.statement.title', { date: s.date }));
  statement.append(heading,
    h('p', {}, t('merchant.statement.sum', {
      gross: yen(s.gross), refunds: yen(s.refunds), fee: yen(s.fee), carried: yen(s.carried_over), net: yen(s.net),
    })),
    h('p', {}, h('a', { href: `/v1/merchant/settlements/${encodeURIComponent(id)}.csv` }, t('merchant.statement.csv'))),
    table([t('merchant.col.kind'), t('merchant.col.when'), t('merchant.store'), `#${t('merchant.col.amount')}`, t('merchant.col.id')],
      (s.lines ?? []).map((l) => [t(`merchant.line.${l.kind}`), at(l.created_at), storeName(ctx, l.store_id),
        yen(l.kind === 'payment' ? l.amount : -Math.abs(l.amount)), h('code', {}, l.id)]),
      { caption: t('merchant.statement.caption', { n: (s.lines ?? []).length }) }));
  heading.focus();
}
