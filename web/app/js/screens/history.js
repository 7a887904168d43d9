// History: the transactions with the running balance, and the CSV export.

import { h } from '../dom.js';
import { t, yen, when } from '../i18n.js';
import { get } from '../api.js';

export async function render(ctx) {
  const body = h('tbody');
  const table = h('table', { class: 'history' },
    h('caption', { class: 'visually-hidden' }, t('history.title')),
    h('thead', {}, h('tr', {}, ['when', 'what', 'amount', 'balance'].map((c) => h('th', { scope: 'col' }, t(`history.${c}`))))),
    body);
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, t('history.more'));
  ctx.main.append(h('h1', { tabindex: -1 }, t('history.title')),
    h('p', {}, h('a', { href: '/v1/transactions.csv', download: 'omamori-history.csv' }, t('history.csv'))),
    h('div', { class: 'scroll' }, table), more);
  let cursor = null;
  const load = async () => {
    const { data } = await get(`/v1/transactions${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''}`);
    for (const item of data.items) {
      const kind = t(`kind.${item.kind}`);
      const what = item.counterparty ? `${kind} · ${item.counterparty}` : kind;
      body.append(h('tr', {}, h('td', {}, when(item.created_at)), h('td', {}, what),
        h('td', { class: item.amount < 0 ? 'num out' : 'num in' }, yen(item.amount)), h('td', { class: 'num' }, yen(item.balance_after))));
    }
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 4 }, t('history.none'))));
    cursor = data.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => load().catch((e) => ctx.warn(e.message)));
  await load();
}
