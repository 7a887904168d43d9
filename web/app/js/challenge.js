// The second step, wherever one is asked for: after a password (in the page), for a step-up or a
// card issuer's check (in a dialog). Buttons "Send SMS code" and "Use a passkey", a field "Code"
// and "Verify"; the kind of code follows the challenge's methods.

import { h, field } from './dom.js';
import { t } from './i18n.js';
import { post } from './api.js';
import * as passkeys from './passkey.js';

/**
 * Renders the second step of challenge `id` into `container`; `onVerified(answer)` runs after a
 * right code; messages go to `say`/`warn`.
 */
export function secondStep(container, { id, methods, onVerified, say, warn }) {
  const kinds = ['sms', 'totp', 'recovery_code'].filter((m) => methods.includes(m));
  const method = h('select', {}, kinds.map((m) => h('option', { value: m }, t(`second.method.${m}`))));
  if (kinds.includes('totp')) method.value = 'totp';
  const code = h('input', { inputmode: 'text', autocomplete: 'one-time-code', required: true, maxlength: 32 });
  const sendButton = h('button', { type: 'button', class: 'secondary', hidden: !kinds.includes('sms') }, t('second.send'));
  sendButton.addEventListener('click', async () => {
    try {
      await post(`/v1/challenges/${encodeURIComponent(id)}/send`, { method: 'sms' }, { auth: false });
      method.value = 'sms';
      say(t('second.sent'));
      code.focus();
    } catch (e) {
      warn(e.message);
    }
  });
  const passkey = h('button', { type: 'button', class: 'secondary', hidden: !methods.includes('passkey') }, t('second.passkey'));
  passkey.addEventListener('click', async () => {
    try {
      const path = `/v1/challenges/${encodeURIComponent(id)}`;
      const { data: started } = await post(`${path}/send`, { method: 'passkey' }, { auth: false });
      const credential = await passkeys.get(started.options);
      const { data } = await post(`${path}/verify`, { method: 'passkey', credential }, { auth: false });
      await onVerified(data);
    } catch (e) {
      warn(passkeys.failure(e, t));
    }
  });
  const form = h('form', { class: 'stack' },
    h('div', { class: 'row' }, sendButton, passkey),
    kinds.length > 1 ? field(t('second.method'), method) : null,
    field(t('second.code'), code),
    h('button', { type: 'submit' }, t('second.verify')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const typed = code.value.trim();
    // A recovery code (XXXX-XXXX-XXXX-XXXX) is recognised by its shape.
    const chosen = /^\d{6}$/.test(typed) || !kinds.includes('recovery_code') ? method.value : 'recovery_code';
    try {
      const { data } = await post(`/v1/challenges/${encodeURIComponent(id)}/verify`, { method: chosen, code: typed }, { auth: false });
      await onVerified(data);
    } catch (e) {
      warn(e.message);
      code.select();
    }
  });
  container.append(form);
  return form;
}

/** The step-up dialog: resolves true once verified, false when cancelled. */
export function stepUpDialog(id, methods, { say, title = t('stepup.title'), lead = t('stepup.lead') }) {
  return new Promise((resolve) => {
    const status = h('p', { role: 'status', class: 'status' });
    const message = h('p', { role: 'alert', class: 'alert' });
    const dialog = h('dialog', { 'aria-labelledby': 'stepup-title' },
      h('h2', { id: 'stepup-title' }, title), h('p', {}, lead));
    const done = (ok) => {
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    secondStep(dialog, {
      id, methods, say: (text) => { message.textContent = ''; status.textContent = text; },
      warn: (text) => { status.textContent = ''; message.textContent = text; },
      onVerified: () => { say(t('stepup.done')); done(true); },
    });
    dialog.append(status, message, h('button', { type: 'button', class: 'link', onclick: () => done(false) }, t('second.cancel')));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector('input')?.focus();
  });
}
