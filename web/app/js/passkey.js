// Passkeys in the browser: the server's options (JSON, binaries base64url) become the arguments of
// `navigator.credentials.create`/`get`, and the credential the browser answers becomes JSON again.
// The private key never leaves the authenticator; the page only carries public data.

const bytes = (b64url) => {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  const text = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0)).buffer;
};

const b64url = (buffer) => {
  if (!buffer) return null;
  let text = '';
  for (const b of new Uint8Array(buffer)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};

const descriptors = (list) => (list ?? []).map((d) => ({ ...d, id: bytes(d.id) }));

/** Whether this browser can use passkeys at all. */
export const supported = () => typeof window.PublicKeyCredential === 'function' && !!navigator.credentials;

/** A new passkey from creation options; answers the credential as JSON. */
export async function create(options) {
  const publicKey = {
    ...options,
    challenge: bytes(options.challenge),
    user: { ...options.user, id: bytes(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  const c = await navigator.credentials.create({ publicKey });
  return {
    id: c.id, rawId: b64url(c.rawId), type: c.type,
    response: {
      clientDataJSON: b64url(c.response.clientDataJSON),
      attestationObject: b64url(c.response.attestationObject),
      transports: c.response.getTransports?.() ?? [],
    },
    clientExtensionResults: c.getClientExtensionResults?.() ?? {},
  };
}

/** An assertion from request options; answers the credential as JSON. */
export async function get(options) {
  const publicKey = { ...options, challenge: bytes(options.challenge), allowCredentials: descriptors(options.allowCredentials) };
  const c = await navigator.credentials.get({ publicKey });
  return {
    id: c.id, rawId: b64url(c.rawId), type: c.type,
    response: {
      clientDataJSON: b64url(c.response.clientDataJSON),
      authenticatorData: b64url(c.response.authenticatorData),
      signature: b64url(c.response.signature),
      userHandle: b64url(c.response.userHandle),
    },
  };
}

/** True when the shopper (or the browser) called the ceremony off. */
export const cancelled = (e) => e?.name === 'NotAllowedError' || e?.name === 'AbortError';

/** Words for a passkey ceremony that failed, from `t` of the catalogue. */
export function failure(e, t) {
  if (cancelled(e)) return t('passkey.cancelled');
  if (e?.code === 'code_invalid') return t('passkey.refused');
  return e?.message ?? t('err.generic');
}
