// The risk rules: every operator sees them; an admin enables, disables and edits them (the
// change applies from the next request and is audited).

import { h, field, clear } from '/app/js/dom.js';
import { t, has } from '/app/js/i18n.js';
import { get, call } from '/app/js/api.js';
import { table } from '../ui.js';

const OUTCOMES = ['allow', 'step_up', 'hold', 'decline'];
const outcomeWords = (o) => (has(`console.outcome.${o}`) ? t(`console.outcome.${o}`) : o);

export function render(ctx) {
  const box = h('div', {});
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.rules.title')), h('p', { class: 'hint' }, t('console.rules.lead')),
    ctx.can('admin') ? null : h('p', { class: 'muted' }, t('console.rules.adminonly')), box);
  load(ctx, box);
}

async function load(ctx, box) {
  let items;
  try {
    items = (await get('/v1/admin/rules')).data.items;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  show(ctx, box, items);
}

function show(ctx, box, items) {
  const columns = [t('console.col.rule'), t('console.col.event'), t('console.col.priority'), t('console.col.conditions'),
    t('console.col.outcome'), t('console.col.enabled')];
  if (ctx.can('admin')) columns.push('');
  const save = async (id, body, done) => {
    try {
      const { data } = await call('PUT', `/v1/admin/rules/${encodeURIComponent(id)}`, body);
      ctx.say(t('console.rule.saved', { id }));
      show(ctx, box, data.items);
      done?.();
    } catch (e) {
      ctx.fail(e);
    }
  };
  const rows = items.map((r) => {
    const cells = [r.id, r.event, String(r.priority), h('code', {}, JSON.stringify(r.conditions)), outcomeWords(r.outcome),
      t(r.enabled ? 'console.yes' : 'console.no')];
    if (ctx.can('admin')) {
      const toggle = r.enabled ? 'disable' : 'enable';
      cells.push(h('div', { class: 'row actions' },
        h('button', { type: 'button', class: 'small secondary', 'aria-label': t(`console.rule.${toggle}.named`, { id: r.id }),
          onClick: () => save(r.id, { enabled: !r.enabled }) }, t(`console.rule.${toggle}`)),
        h('button', { type: 'button', class: 'small secondary', 'aria-label': t('console.rule.edit.named', { id: r.id }),
          onClick: () => edit(ctx, r, save) }, t('console.rule.edit'))));
    }
    return cells;
  });
  clear(box).append(table(columns, rows, { className: 'grid rules' }));
}

function edit(ctx, rule, save) {
  const outcome = h('select', {}, OUTCOMES.map((o) => h('option', { value: o }, outcomeWords(o))));
  outcome.value = rule.outcome;
  const conditions = h('textarea', { rows: 6, spellcheck: 'false' });
  conditions.value = JSON.stringify(rule.conditions, null, 2);
  const error = h('p', { role: 'alert', class: 'alert' });
  const ok = h('button', { type: 'submit' }, t('console.rule.save'));
  const cancel = h('button', { type: 'button', class: 'secondary' }, t('console.cancel'));
  const title = t('console.rule.title', { id: rule.id });
  const form = h('form', { class: 'stack' }, h('h2', {}, title), field(t('console.rule.outcome'), outcome),
    field(t('console.rule.conditions'), conditions), error, h('div', { class: 'row' }, ok, cancel));
  const dialog = h('dialog', { 'aria-label': title }, form);
  const close = () => { dialog.close(); dialog.remove(); };
  cancel.addEventListener('click', close);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(conditions.value || '{}');
    } catch {
      error.textContent = t('console.rule.badjson');
      return;
    }
    save(rule.id, { outcome: outcome.value, conditions: parsed }, close);
  });
  document.body.append(dialog);
  dialog.showModal();
}
