// Payments: every payment of the merchant's stores (a staff member's own stores only), newest
// first, with the basket, the shopper's pseudonym, refunds, a search over what is loaded, more on
// demand, and the same list as CSV.

import { h, field, clear } from '/app/js/dom.js';
import { t, yen } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { at, query, storeSelect, table } from '../ui.js';
import { storeName } from './sales.js';

const state = { store_id: '', from: '', to: '', search: '' };

export function render(ctx) {
  const store = storeSelect(ctx, state.store_id);
  const from = h('input', { type: 'date', value: state.from });
  const to = h('input', { type: 'date', value: state.to });
  const search = h('input', { type: 'search', value: state.search, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { class: 'filters' },
    field(t('merchant.store'), store), field(t('merchant.from'), from), field(t('merchant.to'), to),
    field(t('merchant.search'), search), h('button', { type: 'submit' }, t('merchant.show')));
  const csv = h('a', { class: 'button-link' }, t('merchant.csv'));
  const box = h('div', { 'aria-live': 'polite' });
  const list = { items: [], next: null };
  const params = () => ({ from: state.from, to: state.to, store_id: state.store_id });
  const refresh = async () => {
    csv.setAttribute('href', `/v1/merchant/payments.csv${query(params())}`);
    list.items = [];
    list.next = null;
    await more(ctx, box, list, params);
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (from.value && to.value && from.value > to.value) { ctx.warn(t('merchant.baddates')); return; }
    Object.assign(state, { store_id: store.value, from: from.value, to: to.value, search: search.value.trim() });
    ctx.quiet();
    refresh();
  });
  search.addEventListener('input', () => { state.search = search.value.trim(); draw(ctx, box, list, params); });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.payments.title')), form, h('p', {}, csv), box);
  refresh();
}

async function more(ctx, box, list, params) {
  try {
    const { data } = await get(`/v1/merchant/payments${query({ ...params(), cursor: list.next })}`);
    list.items.push(...data.items);
    list.next = data.next_cursor ?? null;
  } catch (e) {
    ctx.fail(e);
  }
  draw(ctx, box, list, params);
}

function matches(p, needle) {
  if (!needle) return true;
  const n = needle.toLowerCase();
  return [p.payment_id, p.customer_ref, p.terminal_id, ...(p.items ?? []).flatMap((i) => [i.sku, i.name])]
    .some((v) => v && String(v).toLowerCase().includes(n));
}

function basket(items) {
  if (!items?.length) return '';
  return items.map((i) => `${i.quantity} × ${i.name} (${yen(i.unit_amount)})`).join(', ');
}

function draw(ctx, box, list, params) {
  clear(box);
  const shown = list.items.filter((p) => matches(p, state.search));
  box.append(
    table([t('merchant.col.when'), t('merchant.store'), `#${t('merchant.col.amount')}`, `#${t('merchant.col.refunded')}`,
      t('merchant.col.status'), t('merchant.col.customer'), t('merchant.col.basket'), t('merchant.col.payment')],
    shown.map((p) => [at(p.created_at), storeName(ctx, p.store_id), yen(p.amount), p.refunded ? yen(p.refunded) : '',
      t(`merchant.status.${p.status}`), p.customer_ref ?? '', basket(p.items), h('code', {}, p.payment_id)]),
    { caption: t('merchant.payments.caption', { n: shown.length }) }));
  if (list.next) {
    box.append(h('button', { type: 'button', class: 'secondary', onClick: () => more(ctx, box, list, params) }, t('merchant.more')));
  }
}
