// The audit log, newest first, with the result of walking its hash chain (checked on opening,
// and again on demand).

import { h, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get } from '/app/js/api.js';
import { at, table, who } from '../ui.js';

export function render(ctx) {
  const verdict = h('div', { class: 'verdict', role: 'status' });
  const check = h('button', { type: 'button', class: 'secondary' }, t('console.audit.check'));
  const rows = h('div', {});
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, t('console.audit.more'));
  let cursor = null;
  let entries = [];
  check.addEventListener('click', () => verify(ctx, verdict));
  const page = async () => {
    try {
      const { data } = await get(`/v1/admin/audit${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''}`);
      entries = entries.concat(data.items);
      cursor = data.next_cursor;
      more.hidden = !cursor;
      clear(rows).append(table(
        [t('console.col.when'), t('console.col.who'), t('console.col.what'), t('console.col.subject'), t('console.col.detail')],
        entries.map((e) => [at(e.at), who(e.actor), e.action, e.subject, h('code', {}, JSON.stringify(e.detail))]),
        { className: 'grid audit' }));
    } catch (e) {
      ctx.fail(e);
    }
  };
  more.addEventListener('click', page);
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.audit.title')), h('div', { class: 'row check' }, verdict, check), rows, more);
  verify(ctx, verdict);
  page();
}

async function verify(ctx, box) {
  try {
    const { data } = await get('/v1/admin/audit/verify');
    box.className = `verdict ${data.intact ? 'intact' : 'broken'}`;
    box.textContent = data.intact
      ? (data.head_id === null ? t('console.audit.empty') : t('console.audit.intact', { n: data.head_id, when: at(data.checked_at) }))
      : t('console.audit.broken', { id: data.broken_id, problem: data.problem });
  } catch (e) {
    ctx.fail(e);
  }
}
