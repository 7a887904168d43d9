// Stripe.js, when the server's card processor is Stripe: loaded once from the origin the page's
// policy allows (GET /v1/processor/config names it), so that card numbers and the issuer's
// 3-D Secure stay in Stripe's own frames. Nothing here sees a card number.

import { get } from './api.js';
import { t } from './i18n.js';
import { h } from './dom.js';

let config;
let client;

/** The processor's settings: `{processor, publishable_key?, js_url?}` (the sandbox's when unknown). */
export async function processorConfig() {
  if (!config) {
    try {
      ({ data: config } = await get('/v1/processor/config', { auth: false }));
    } catch {
      return { processor: 'sandbox' };
    }
  }
  return config;
}

/** A Stripe.js client, or an error in words when it cannot be loaded. */
export async function stripeClient() {
  if (client) return client;
  const { js_url: src, publishable_key: key } = await processorConfig();
  const Stripe = await new Promise((resolve, reject) => {
    const script = h('script', { src });
    script.addEventListener('load', () => resolve(window.Stripe));
    script.addEventListener('error', () => {
      script.remove();
      reject(new Error(t('cards.stripe.unavailable')));
    });
    document.head.append(script);
  });
  client = Stripe(key);
  return client;
}

/** Runs the issuer's 3-D Secure for an intent Omamori confirmed (`client_secret`); throws in words. */
export async function authenticate(clientSecret) {
  const stripe = await stripeClient();
  const done = stripe.handleNextAction
    ? await stripe.handleNextAction({ clientSecret })
    : await stripe.confirmCardSetup(clientSecret);
  if (done.error) throw new Error(done.error.message || t('cards.issuer.failed'));
}
