-- Passkeys (WebAuthn): only the public key of each credential is kept, as its COSE_Key, with the
-- authenticator's signature counter (a counter that goes back means a copied key). Exactly one of
-- user_id and operator_id is set.
CREATE TABLE passkeys (
    id             TEXT    PRIMARY KEY,
    user_id        TEXT,
    operator_id    TEXT,
    -- base64url, as the browser names the credential.
    credential_id  TEXT    NOT NULL UNIQUE,
    -- The COSE_Key, base64url.
    public_key     TEXT    NOT NULL,
    sign_count     BIGINT  NOT NULL DEFAULT 0,
    name           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);
CREATE INDEX passkeys_operator ON passkeys (operator_id);

-- A registration ceremony in progress: its challenge, used once, for 5 minutes.
CREATE TABLE passkey_registrations (
    id           TEXT    PRIMARY KEY,
    user_id      TEXT,
    operator_id  TEXT,
    challenge    TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('open', 'used')),
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);

-- The WebAuthn challenge (base64url) of a challenge answered by passkey: replaced by each send.
ALTER TABLE challenges ADD COLUMN passkey_challenge TEXT;
