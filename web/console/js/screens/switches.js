// The switch board: engage any switch in any scope with a reason; the switches in force with who
// engaged them and when; release with the four-eyes rule in sight ("waiting for a second operator").

import { h, field, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get, post } from '/app/js/api.js';
import { askReason, at, who, switchWords, scopeWords, SWITCHES } from '../ui.js';

const SCOPES = ['global', 'merchant', 'user', 'card', 'country'];
const REFRESH_MS = 4000;

export function render(ctx) {
  const board = h('section', { 'aria-labelledby': 'engaged-title' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.switches.title')), h('p', { class: 'hint' }, t('console.switches.lead')));
  const layout = h('div', { class: 'split' });
  if (ctx.can('operator')) layout.append(engageForm(ctx, () => load(ctx, board)));
  else layout.append(h('p', { class: 'card muted' }, t('console.readonly')));
  layout.append(board);
  ctx.main.append(layout);
  load(ctx, board);
  const timer = setInterval(() => load(ctx, board, { quietly: true }), REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
}

function engageForm(ctx, reload) {
  const prefill = ctx.take('switches');
  const name = h('select', { required: true }, SWITCHES.map((n) => h('option', { value: n }, switchWords(n))));
  const kind = h('select', {}, SCOPES.map((k) => h('option', { value: k }, t(`console.scope.${k}`))));
  const id = h('input', { maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const idField = field(t('console.scope.id'), id);
  idField.hidden = true;
  kind.addEventListener('change', () => { idField.hidden = kind.value === 'global'; id.required = !idField.hidden; });
  const reason = h('textarea', { rows: 3, required: true, maxlength: 500 });
  const button = h('button', { type: 'submit' }, t('console.engage'));
  const form = h('form', { class: 'stack card engage' },
    h('h2', {}, t('console.switches.engage')),
    field(t('console.switch'), name), field(t('console.scope'), kind), idField,
    field(t('console.reason'), reason), h('p', { class: 'hint' }, t('console.reason.hint')), button);
  if (prefill) {
    name.value = prefill.name;
    reason.value = prefill.reason ?? '';
    setTimeout(() => { ctx.say(t('console.prefilled')); button.focus(); }, 0);
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    const scope = kind.value === 'global' ? undefined : { kind: kind.value, id: id.value.trim() };
    try {
      const { data } = await post('/v1/admin/switches', { name: name.value, scope, reason: reason.value.trim() });
      reason.value = '';
      ctx.say(t('console.engaged', { what: switchWords(data.name), scope: scopeWords(data.scope) }));
      await reload();
    } catch (e) {
      ctx.fail(e);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function load(ctx, board, { quietly = false } = {}) {
  let items;
  try {
    items = (await get('/v1/admin/switches')).data.items;
  } catch (e) {
    if (!quietly) ctx.fail(e);
    return;
  }
  if (!board.isConnected && quietly) return;
  clear(board);
  board.append(h('h2', { id: 'engaged-title' }, t('console.engaged.list')));
  if (!items.length) {
    board.append(h('p', { class: 'card muted' }, t('console.engaged.none')));
    return;
  }
  board.append(h('ul', { class: 'switches' }, items.map((s) => row(ctx, s, () => load(ctx, board)))));
}

function row(ctx, s, reload) {
  const what = switchWords(s.name);
  const scope = scopeWords(s.scope);
  const mine = s.release_requested_by && s.release_requested_by === ctx.actor();
  const parts = [
    h('h3', {}, `${what} · ${scope}`, s.kind === 'freeze' ? ` (${t('console.kind.freeze')})` : ''),
    h('p', { class: 'reason' }, s.reason),
    h('p', { class: 'muted' }, t('console.engaged.by', { when: at(s.engaged_at), who: who(s.engaged_by) })),
  ];
  if (s.release_requested_by) {
    parts.push(h('p', { class: 'waiting' }, mine
      ? t('console.release.yours')
      : t('console.release.waiting', { who: who(s.release_requested_by) })));
  }
  const li = h('li', { class: `switch-item${s.release_requested_by ? ' asked' : ''}`, 'data-name': s.name }, h('div', {}, parts));
  if (ctx.can('operator') && !mine) {
    const release = h('button', { type: 'button', class: 'danger' }, t('console.release'));
    release.addEventListener('click', async () => {
      const reason = await askReason({
        title: t('console.release.title', { what, scope }), lead: t('console.release.lead'), submit: t('console.release'),
      });
      if (!reason) return;
      try {
        const { data } = await post(`/v1/admin/switches/${encodeURIComponent(s.id)}/release`, { reason });
        ctx.say(data.released ? t('console.release.done', { what, scope }) : t('console.release.asked'));
        await reload();
      } catch (e) {
        ctx.fail(e);
      }
    });
    li.append(release);
  }
  return li;
}
