// Sales: today by hour against the same weekday last week, the days of a period, the week's
// rhythm (weekday × hour) and the stores side by side. Figures come from the analytics routes;
// customer counts resting on too few shoppers arrive as null and are shown as withheld.

import { h, clear } from '/app/js/dom.js';
import { t, yen } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { barChart } from '../chart.js';
import { addDays, count, daysBetween, period, filters, kpis, money, query, table, tokyoToday } from '../ui.js';

const state = { store_id: '', from: null, to: null };
const HOURS = Array.from({ length: 24 }, (_, i) => String(i).padStart(2, '0'));
const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

export function sales(params) {
  return get(`/v1/merchant/analytics/sales${query(params)}`).then((r) => r.data);
}

export function render(ctx) {
  period(state, 30);
  const box = h('div', { 'aria-live': 'polite' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.sales.title')),
    filters(ctx, state, { onChange: () => load(ctx, box) }), box);
  load(ctx, box);
}

async function load(ctx, box) {
  const today = tokyoToday();
  const lastWeek = addDays(today, -7);
  const store = state.store_id;
  let now, before, days, rhythm, stores;
  try {
    [now, before, days, rhythm, stores] = await Promise.all([
      sales({ from: today, to: today, store_id: store, group_by: 'hour' }),
      sales({ from: lastWeek, to: lastWeek, store_id: store, group_by: 'hour' }),
      sales({ from: state.from, to: state.to, store_id: store, group_by: 'day' }),
      sales({ from: state.from, to: state.to, store_id: store, group_by: 'weekday_hour' }),
      sales({ from: state.from, to: state.to, store_id: store, group_by: 'store' }),
    ]);
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  const byKey = (answer) => new Map(answer.items.map((i) => [i.key, i]));
  const nowBy = byKey(now);
  const beforeBy = byKey(before);
  box.append(
    h('h2', {}, t('merchant.sales.today', { date: today })),
    kpis([
      [t('merchant.net'), yen(now.totals.net)],
      [t('merchant.payments'), count(now.totals.payments)],
      [t('merchant.avg'), money(now.totals.average_ticket)],
      [t('merchant.lastweek'), yen(before.totals.net)],
    ]),
    h('figure', { class: 'chart' },
      h('figcaption', {}, t('merchant.sales.byhour')),
      barChart({
        label: t('merchant.sales.byhour.label', { today: yen(now.totals.net), before: yen(before.totals.net) }),
        labels: HOURS,
        series: [
          { name: t('merchant.sales.todayseries'), values: HOURS.map((k) => nowBy.get(k)?.net ?? 0) },
          { name: t('merchant.sales.lastweekseries', { date: lastWeek }), values: HOURS.map((k) => beforeBy.get(k)?.net ?? 0), kind: 'line' },
        ],
        format: yen, tickEvery: 3,
      }),
      h('ul', { class: 'legend' },
        h('li', {}, h('span', { class: 'swatch a' }), t('merchant.sales.todayseries')),
        h('li', {}, h('span', { class: 'swatch b' }), t('merchant.sales.lastweekseries', { date: lastWeek })))));
  renderPeriod(box, days, rhythm, stores, ctx);
}

function renderPeriod(box, days, rhythm, stores, ctx) {
  const dayBy = new Map(days.items.map((i) => [i.key, i]));
  const dates = daysBetween(state.from, state.to);
  const tot = days.totals;
  box.append(
    h('h2', {}, t('merchant.sales.period', { from: state.from, to: state.to })),
    kpis([
      [t('merchant.gross'), yen(tot.gross)], [t('merchant.refunds'), yen(tot.refunds)], [t('merchant.net'), yen(tot.net)],
      [t('merchant.payments'), count(tot.payments)], [t('merchant.avg'), money(tot.average_ticket)],
      [t('merchant.customers'), count(tot.customers)],
    ]),
    h('figure', { class: 'chart' },
      h('figcaption', {}, t('merchant.sales.byday')),
      barChart({
        label: t('merchant.sales.byday.label', { from: state.from, to: state.to, net: yen(tot.net) }),
        labels: dates.map((d) => d.slice(5)),
        series: [{ name: t('merchant.net'), values: dates.map((d) => dayBy.get(d)?.net ?? 0) }],
        format: yen, tickEvery: Math.max(1, Math.ceil(dates.length / 10)),
      })),
    h('h2', {}, t('merchant.sales.rhythm')),
    rhythmTable(rhythm),
    h('h2', {}, t('merchant.sales.bystore')),
    table([t('merchant.store'), `#${t('merchant.payments')}`, `#${t('merchant.gross')}`, `#${t('merchant.refunds')}`,
      `#${t('merchant.net')}`, `#${t('merchant.avg')}`, `#${t('merchant.customers')}`],
    stores.items.map((i) => [storeName(ctx, i.key), count(i.payments), yen(i.gross), yen(i.refunds), yen(i.net),
      money(i.average_ticket), count(i.customers)])));
}

/** Net sales by weekday (rows) and hour (columns), hours without sales left out. */
function rhythmTable(rhythm) {
  const by = new Map(rhythm.items.map((i) => [i.key, i]));
  const hours = HOURS.filter((hh) => WEEKDAYS.some((d) => by.has(`${d}-${hh}`)));
  const top = Math.max(1, ...rhythm.items.map((i) => i.net));
  const cell = (key) => {
    const net = by.get(key)?.net;
    if (net === undefined) return '';
    // Five shades, darker for busier hours; the amount is the text, the shade only a help.
    return h('span', { class: `heat heat-${Math.min(4, Math.floor((5 * Math.max(0, net)) / (top + 1)))}` }, yen(net));
  };
  return table([t('merchant.weekday'), ...hours.map((hh) => `#${hh}`)],
    WEEKDAYS.map((d) => [t(`merchant.day.${d}`), ...hours.map((hh) => cell(`${d}-${hh}`))]),
    { caption: t('merchant.sales.rhythm.caption') });
}

export function storeName(ctx, id) {
  return ctx.me?.stores?.find((s) => s.store_id === id)?.name ?? id;
}
