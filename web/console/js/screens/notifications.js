// Messages that keep failing (and, on demand, those waiting or delivered): channel, masked
// recipient, kind, attempts and the last error, never the text.

import { h, field, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { at, table } from '../ui.js';

export function render(ctx) {
  const status = h('select', {}, ['failed', 'pending', 'delivered'].map((s) => h('option', { value: s }, t(`console.notifications.${s}`))));
  const box = h('div', {});
  const load = async () => {
    try {
      const { data } = await get(`/v1/admin/notifications?status=${status.value}`);
      clear(box).append(data.items.length
        ? table([t('console.col.when'), t('console.col.channel'), t('console.col.to'), t('console.col.what'),
          t('console.col.attempts'), t('console.col.error')],
        data.items.map((n) => [at(n.created_at), n.channel, n.recipient, n.kind, String(n.attempts), n.last_error ?? '']))
        : h('p', { class: 'card muted' }, t('console.notifications.none')));
    } catch (e) {
      ctx.fail(e);
    }
  };
  status.addEventListener('change', load);
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.notifications.title')),
    h('p', { class: 'hint' }, t('console.notifications.lead')), h('div', { class: 'narrow' }, field(t('console.notifications.status'), status)), box);
  load();
}
