// Review cases (payments and top-ups a risk rule held: approve or decline) and corrections (one
// operator proposes undoing a fraudulent payment or top-up, a second approves).

import { h, field, clear } from '/app/js/dom.js';
import { t, has, yen } from '/app/js/i18n.js';
import { get, post } from '/app/js/api.js';
import { at, who } from '../ui.js';

export function render(ctx) {
  const cases = h('section', {});
  const corrections = h('section', {});
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.reviews.title')), h('p', { class: 'hint' }, t('console.reviews.lead')),
    cases, h('h2', {}, t('console.corrections.title')), h('p', { class: 'hint' }, t('console.corrections.lead')));
  if (ctx.can('operator')) ctx.main.append(proposeForm(ctx, () => loadCorrections(ctx, corrections)));
  ctx.main.append(corrections);
  loadCases(ctx, cases);
  loadCorrections(ctx, corrections);
}

const kindWords = (k) => (has(`console.review.kind.${k}`) ? t(`console.review.kind.${k}`) : k);

async function loadCases(ctx, box) {
  let items;
  try {
    items = (await get('/v1/admin/reviews')).data.items;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  if (!items.length) { box.append(h('p', { class: 'card muted' }, t('console.reviews.none'))); return; }
  box.append(h('ul', { class: 'cases' }, items.map((r) => {
    const amount = r.detail?.amount !== undefined ? yen(r.detail.amount) : '';
    const li = h('li', { class: `case state-${r.state}` },
      h('div', {},
        h('p', { class: 'strong' }, t('console.review.line', { kind: kindWords(r.kind), amount, user: r.user_id, rule: r.rule_id })),
        h('p', { class: 'muted' }, `${at(r.created_at)} · ${t(`console.review.state.${r.state}`)}`,
          r.detail?.last4 ? ` · **** ${r.detail.last4}` : '')));
    if (r.state === 'open' && ctx.can('operator')) {
      const decide = (decision) => async () => {
        try {
          await post(`/v1/admin/reviews/${encodeURIComponent(r.id)}/decide`, { decision });
          ctx.say(t(decision === 'approve' ? 'console.approved' : 'console.declined'));
          await loadCases(ctx, box);
        } catch (e) {
          ctx.fail(e);
        }
      };
      li.append(h('div', { class: 'row actions' },
        h('button', { type: 'button', class: 'small', onClick: decide('approve') }, t('console.approve')),
        h('button', { type: 'button', class: 'small danger', onClick: decide('reject') }, t('console.decline'))));
    }
    return li;
  })));
}

function proposeForm(ctx, reload) {
  const kind = h('select', {}, ['payment', 'topup'].map((k) => h('option', { value: k }, t(`console.correction.kind.${k}`))));
  const id = h('input', { required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const reason = h('textarea', { rows: 2, required: true, maxlength: 500 });
  const button = h('button', { type: 'submit' }, t('console.correction.propose'));
  const form = h('form', { class: 'stack card' },
    h('div', { class: 'row' }, field(t('console.correction.kind'), kind), field(t('console.correction.id'), id)),
    field(t('console.reason'), reason), button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await post('/v1/admin/corrections', { kind: kind.value, id: id.value.trim(), reason: reason.value.trim() });
      id.value = '';
      reason.value = '';
      ctx.say(t('console.correction.proposed'));
      await reload();
    } catch (e) {
      ctx.fail(e);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function loadCorrections(ctx, box) {
  let items;
  try {
    items = (await get('/v1/admin/corrections')).data.items;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  if (!items.length) { box.append(h('p', { class: 'card muted' }, t('console.corrections.none'))); return; }
  box.append(h('ul', { class: 'cases' }, items.map((c) => {
    const li = h('li', { class: `case state-${c.status}` },
      h('div', {},
        h('p', { class: 'strong' }, t('console.correction.line', { kind: kindWords(c.kind), id: c.target, reason: c.reason })),
        h('p', { class: 'muted' }, t('console.correction.by', { when: at(c.proposed_at), who: who(c.proposed_by) }),
          ' · ', t(`console.correction.status.${c.status}`))));
    if (c.status === 'proposed' && ctx.can('operator') && c.proposed_by !== ctx.actor()) {
      li.append(h('button', {
        type: 'button', class: 'small',
        onClick: async () => {
          try {
            await post(`/v1/admin/corrections/${encodeURIComponent(c.correction_id)}/approve`, {});
            ctx.say(t('console.correction.applied'));
            await loadCorrections(ctx, box);
          } catch (e) {
            ctx.fail(e);
          }
        },
      }, t('console.approve')));
    }
    return li;
  })));
}
