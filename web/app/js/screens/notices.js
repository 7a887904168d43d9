// Notices: what Omamori told the shopper (receipts, security notices), shown as text.

import { h } from '../dom.js';
import { t, when } from '../i18n.js';
import { get } from '../api.js';

export async function render(ctx) {
  const list = h('ul', { class: 'notices' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('notices.title')), list);
  const { data } = await get('/v1/notifications');
  if (!data.items.length) list.append(h('li', { class: 'empty' }, t('notices.none')));
  for (const n of data.items) {
    list.append(h('li', { class: 'card' },
      n.title ? h('h2', {}, n.title) : null,
      h('p', { class: 'notice-body' }, n.body),
      h('p', { class: 'muted' }, h('time', { datetime: n.created_at }, when(n.created_at)))));
  }
}
