// A shopper looked up by phone or e-mail: who they are, whether they are frozen (freeze at once;
// unfreeze takes two operators), their sessions, devices, cards and recent money movements.

import { h, field, clear } from '/app/js/dom.js';
import { t, yen } from '/app/js/i18n.js';
import { get, post } from '/app/js/api.js';
import { askReason, at, table, who } from '../ui.js';

let lastLogin = '';

export function render(ctx) {
  const login = h('input', { required: true, maxlength: 254, autocomplete: 'off', spellcheck: 'false', value: lastLogin });
  const button = h('button', { type: 'submit' }, t('console.users.find'));
  const result = h('section', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack card lookup' },
    field(t('console.users.lookup'), login), h('p', { class: 'hint' }, t('console.users.hint')), button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    lastLogin = login.value.trim();
    ctx.quiet();
    await lookup(ctx, lastLogin, result);
  });
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.users.title')), form, result);
  if (lastLogin) lookup(ctx, lastLogin, result);
  else login.focus();
}

async function lookup(ctx, login, box) {
  clear(box);
  let u;
  try {
    u = (await get(`/v1/admin/users?login=${encodeURIComponent(login)}`)).data;
  } catch (e) {
    if (e.status === 404) ctx.warn(t('console.users.notfound'));
    else ctx.fail(e);
    return;
  }
  const again = () => lookup(ctx, login, box);
  box.append(
    h('div', { class: 'card' },
      h('h2', {}, u.email, ' · ', u.phone),
      h('p', { class: 'muted' }, u.user_id, ' · ', t('console.user.since', { when: at(u.created_at) })),
      h('p', { class: 'strong' }, t('console.user.balance', { amount: yen(u.balance) })),
      u.cooling_off_until ? h('p', {}, t('console.user.cooling', { when: at(u.cooling_off_until) })) : null,
      freezeBlock(ctx, u, again)),
    h('h2', {}, t('console.user.sessions')),
    table([t('console.col.device'), t('console.col.since'), t('console.col.seen'), t('console.col.ip'), t('console.col.country')],
      u.sessions.map((s) => [s.device_id, at(s.created_at), at(s.last_seen_at), s.ip ?? '', s.country ?? ''])),
    h('h2', {}, t('console.user.devices')),
    table([t('console.col.device'), t('console.col.since'), t('console.col.lastlogin'), t('console.col.recognised')],
      u.devices.map((d) => [d.device_id, at(d.created_at), at(d.last_two_step_at), t(d.recognised ? 'console.yes' : 'console.no')])),
    h('h2', {}, t('console.user.cards')),
    table([t('console.col.card'), t('console.col.status')], u.cards.map((c) => [`${c.brand} **** ${c.last4} (${c.card_id})`, c.status])),
    h('h2', {}, t('console.user.activity')),
    table([t('console.col.when'), t('console.col.what'), t('console.col.amount'), t('console.col.balance')],
      u.activity.map((a) => [at(a.created_at), [a.kind, a.counterparty].filter(Boolean).join(' · '), yen(a.amount), yen(a.balance_after)])));
}

function freezeBlock(ctx, u, again) {
  const f = u.freeze;
  const box = h('div', { class: f.frozen ? 'frozen' : '' },
    h('p', { class: 'strong' }, t(f.frozen ? 'console.user.frozen' : 'console.user.active')));
  if (f.frozen && f.unfreeze_requested_by) {
    box.append(h('p', { class: 'waiting' }, f.unfreeze_requested_by === ctx.actor()
      ? t('console.release.yours') : t('console.release.waiting', { who: who(f.unfreeze_requested_by) })));
  }
  if (!ctx.can('operator')) return box;
  const act = async (path, title, lead, submit, done) => {
    const reason = await askReason({ title, lead, submit });
    if (!reason) return;
    try {
      const r = await post(`/v1/admin/users/${encodeURIComponent(u.user_id)}/${path}`, { reason });
      ctx.say(done(r.data));
      await again();
    } catch (e) {
      ctx.fail(e);
    }
  };
  if (!f.frozen) {
    box.append(h('button', {
      type: 'button', class: 'danger',
      onClick: () => act('freeze', t('console.freeze.title'), t('console.freeze.lead'), t('console.freeze'), () => t('console.frozen.done')),
    }, t('console.freeze')));
  } else if (f.unfreeze_requested_by !== ctx.actor()) {
    box.append(h('button', {
      type: 'button', class: 'secondary',
      onClick: () => act('unfreeze', t('console.unfreeze.title'), t('console.release.lead'), t('console.unfreeze'),
        (d) => t(d.unfrozen ? 'console.unfreeze.done' : 'console.unfreeze.asked')),
    }, t('console.unfreeze')));
  }
  return box;
}
