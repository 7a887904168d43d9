// Pieces every dashboard screen uses: problems in words, tables, dates in Japan's calendar,
// filters, and a figure that may be withheld to protect shoppers (null).

import { h, field } from '/app/js/dom.js';
import { t, has, when, yen } from '/app/js/i18n.js';
import { words as walletWords } from '/app/js/api.js';

/** A problem in words a store owner can act on: the dashboard's own sentence, else the shared one. */
export function words(problem) {
  const code = problem?.code;
  if (code && has(`merchant.err.${code}`)) return t(`merchant.err.${code}`);
  return walletWords(problem?.status ?? 0, problem?.body ?? { code });
}

/**
 * A table: `columns` are header texts (a leading '#' marks a numeric column, right-aligned),
 * `rows` arrays of cells (text or nodes).
 */
export function table(columns, rows, { caption } = {}) {
  const numeric = columns.map((c) => c.startsWith('#'));
  const names = columns.map((c) => (c.startsWith('#') ? c.slice(1) : c));
  return h('div', { class: 'scroll' },
    h('table', { class: 'grid' },
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, names.map((c, i) => h('th', { scope: 'col', class: numeric[i] ? 'num' : null }, c)))),
      h('tbody', {}, rows.length
        ? rows.map((r) => h('tr', {}, r.map((cell, i) => h('td', { class: numeric[i] ? 'num' : null }, cell ?? ''))))
        : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, t('merchant.none'))))));
}

/** A count, or the words for a figure withheld because too few customers stand behind it. */
export function count(n) {
  return n === null || n === undefined ? t('merchant.withheld') : Number(n).toLocaleString('en-US');
}

/** A share (0..1) as a percentage, or withheld. */
export function share(x) {
  return x === null || x === undefined ? t('merchant.withheld') : `${(Number(x) * 100).toFixed(1)}%`;
}

export const money = (n) => (n === null || n === undefined ? t('merchant.withheld') : yen(n));

/** A time in Japan's time zone, saying so. */
export const at = (iso) => (iso ? `${when(iso)} JST` : '');

const DAY = 86400000;

let serverToday = null;

/** The service's business date, as `GET /v1/merchant/me` tells it (the sandbox may move its clock). */
export function setToday(date) {
  serverToday = /^\d{4}-\d{2}-\d{2}$/.test(date ?? '') ? date : null;
}

/**
 * Today's date in Asia/Tokyo, `YYYY-MM-DD`: the service's when it said, else this browser's clock
 * (Japan has no daylight saving: UTC+9 all year).
 */
export function tokyoToday() {
  return serverToday ?? new Date(Date.now() + 9 * 3600000).toISOString().slice(0, 10);
}

/** Fills a screen's period, the last `days` days to today, the first time the screen opens. */
export function period(state, days) {
  if (!state.to) {
    state.to = tokyoToday();
    state.from = addDays(state.to, 1 - days);
  }
  return state;
}

/** `date` moved by `days`. */
export function addDays(date, days) {
  return new Date(Date.parse(`${date}T00:00:00Z`) + days * DAY).toISOString().slice(0, 10);
}

/** The dates from `from` to `to`, both included. */
export function daysBetween(from, to) {
  const out = [];
  for (let d = from; d <= to && out.length < 400; d = addDays(d, 1)) out.push(d);
  return out;
}

/** Query text from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The shared filter row: a store (all, or one of the signed-in person's) and, optionally, dates. */
/** A select of the signed-in person's stores, "All stores" first, showing `value`. */
export function storeSelect(ctx, value) {
  const store = h('select', {},
    h('option', { value: '' }, t('merchant.allstores')),
    (ctx.me?.stores ?? []).map((s) => h('option', { value: s.store_id }, s.name)));
  store.value = value ?? '';
  return store;
}

export function filters(ctx, state, { dates = true, onChange }) {
  const store = storeSelect(ctx, state.store_id);
  const from = h('input', { type: 'date', value: state.from, required: true });
  const to = h('input', { type: 'date', value: state.to, required: true });
  const apply = h('button', { type: 'submit' }, t('merchant.show'));
  const form = h('form', { class: 'filters' },
    field(t('merchant.store'), store), dates ? field(t('merchant.from'), from) : null,
    dates ? field(t('merchant.to'), to) : null, apply);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    state.store_id = store.value;
    if (dates) {
      if (!from.value || !to.value || from.value > to.value) { ctx.warn(t('merchant.baddates')); return; }
      state.from = from.value;
      state.to = to.value;
    }
    ctx.quiet();
    onChange();
  });
  return form;
}

/** Key figures as a list of labelled values. */
export function kpis(pairs) {
  return h('ul', { class: 'kpis' }, pairs.map(([label, value]) =>
    h('li', {}, h('span', { class: 'label' }, label), h('span', { class: 'value' }, value))));
}
