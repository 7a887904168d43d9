// Alerts as they arrive (the shell fetches them every few seconds), each with its detector, its
// figure and a one-click path to the switch that stops what it saw.

import { h, clear } from '/app/js/dom.js';
import { t, has } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { at, switchWords } from '../ui.js';

/** Which switches stop what a detector saw, the likeliest first. */
const REMEDIES = {
  card_declines: ['card_linking', 'topups'],
  failed_logins: ['logins'],
  failed_codes: ['logins'],
  throttled_addresses: ['logins'],
  risk_declines: ['topups', 'payments'],
};

let list = null;
/** The switches engaged everywhere now: an alert offers to stop only what still runs. */
let stopped = new Set();

export function render(ctx) {
  list = h('ul', { class: 'alerts', 'aria-live': 'off' });
  ctx.main.append(
    h('h1', { tabindex: -1 }, t('console.alerts.title')),
    h('p', { class: 'hint' }, t('console.alerts.lead')),
    list);
  ctx.onLeave(() => {
    ctx.alerts().fresh.clear();
    ctx.seenNews();
    list = null;
  });
  refresh(ctx);
}

export async function refresh(ctx) {
  if (!list) return;
  try {
    const { data } = await get('/v1/admin/switches');
    stopped = new Set(data.items.filter((s) => s.scope.kind === 'global').map((s) => s.name));
  } catch {
    stopped = new Set();
  }
  if (!list) return;
  const { items, fresh, seen } = ctx.alerts();
  clear(list);
  if (seen === null) return;
  if (!items.length) {
    list.append(h('li', { class: 'empty' }, t('console.alerts.none')));
    return;
  }
  for (const a of items) list.append(item(ctx, a, fresh.has(a.id)));
}

function item(ctx, a, isNew) {
  const detector = has(`console.detector.${a.kind}`) ? t(`console.detector.${a.kind}`) : a.kind;
  const figure = (String(a.detail).match(/^\d[\d,]*/) ?? [])[0];
  const severity = has(`console.alert.severity.${a.severity}`) ? t(`console.alert.severity.${a.severity}`) : a.severity;
  const actions = ctx.can('operator')
    ? (REMEDIES[a.kind] ?? []).map((name) => {
      if (stopped.has(name)) {
        return h('a', { href: '#/switches', class: 'stopped' }, t('console.alert.stopped', { what: switchWords(name) }));
      }
      const b = h('button', { type: 'button', class: 'small' }, t('console.alert.stop', { what: switchWords(name) }));
      b.addEventListener('click', () => ctx.go('switches', { name, reason: `${detector}: ${a.detail}` }));
      return b;
    })
    : [];
  return h('li', { class: `alert-item sev-${a.severity}${isNew ? ' new' : ''}`, 'data-kind': a.kind },
    h('div', { class: 'alert-head' },
      h('h2', {}, detector),
      h('span', { class: `sev sev-${a.severity}` }, severity),
      isNew ? h('span', { class: 'badge' }, t('console.new', { n: 1 })) : null),
    h('div', { class: 'alert-body' },
      figure ? h('p', { class: 'figure' }, figure) : null,
      h('div', {},
        h('p', { class: 'detail' }, a.detail),
        h('p', { class: 'muted' }, t('console.alert.at', { when: at(a.created_at) })))),
    actions.length ? h('div', { class: 'row actions' }, actions) : null);
}
