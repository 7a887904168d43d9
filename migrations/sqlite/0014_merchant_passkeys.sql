-- Passkeys for merchant staff: passkeys and registration ceremonies gain a third owner, and
-- exactly one owner column is set. Challenges gain a merchant-user owner (a step-up of the
-- dashboard) and the `merchant_login` purpose (a passkey login of the dashboard). SQLite cannot
-- add or change a CHECK constraint in place: the three tables are rebuilt (no table refers to
-- them).
CREATE TABLE passkeys_new (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT,
    operator_id       TEXT,
    credential_id     TEXT    NOT NULL UNIQUE,
    public_key        TEXT    NOT NULL,
    sign_count        BIGINT  NOT NULL DEFAULT 0,
    name              TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    last_used_at      BIGINT,
    merchant_user_id  TEXT,
    CONSTRAINT passkeys_one_owner CHECK (
        (user_id IS NOT NULL AND operator_id IS NULL AND merchant_user_id IS NULL)
        OR (user_id IS NULL AND operator_id IS NOT NULL AND merchant_user_id IS NULL)
        OR (user_id IS NULL AND operator_id IS NULL AND merchant_user_id IS NOT NULL))
);
INSERT INTO passkeys_new (id, user_id, operator_id, credential_id, public_key, sign_count, name, created_at,
    last_used_at)
    SELECT id, user_id, operator_id, credential_id, public_key, sign_count, name, created_at, last_used_at
    FROM passkeys;
DROP TABLE passkeys;
ALTER TABLE passkeys_new RENAME TO passkeys;
CREATE INDEX passkeys_user ON passkeys (user_id);
CREATE INDEX passkeys_operator ON passkeys (operator_id);
CREATE INDEX passkeys_merchant_user ON passkeys (merchant_user_id);

CREATE TABLE passkey_registrations_new (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT,
    operator_id       TEXT,
    challenge         TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('open', 'used')),
    created_at        BIGINT  NOT NULL,
    expires_at        BIGINT  NOT NULL,
    merchant_user_id  TEXT,
    CONSTRAINT passkey_registrations_one_owner CHECK (
        (user_id IS NOT NULL AND operator_id IS NULL AND merchant_user_id IS NULL)
        OR (user_id IS NULL AND operator_id IS NOT NULL AND merchant_user_id IS NULL)
        OR (user_id IS NULL AND operator_id IS NULL AND merchant_user_id IS NOT NULL))
);
INSERT INTO passkey_registrations_new (id, user_id, operator_id, challenge, state, created_at, expires_at)
    SELECT id, user_id, operator_id, challenge, state, created_at, expires_at FROM passkey_registrations;
DROP TABLE passkey_registrations;
ALTER TABLE passkey_registrations_new RENAME TO passkey_registrations;

CREATE TABLE challenges_new (
    id                 TEXT    PRIMARY KEY,
    purpose            TEXT    NOT NULL
        CHECK (purpose IN ('login', 'step_up', 'operator_login', 'card', 'merchant_login')),
    user_id            TEXT,
    operator_id        TEXT,
    session_id         TEXT,
    device_id          TEXT,
    subject_id         TEXT,
    methods            TEXT    NOT NULL,
    sms_code_hash      TEXT,
    sms_sends          BIGINT  NOT NULL DEFAULT 0,
    failures           BIGINT  NOT NULL DEFAULT 0,
    state              TEXT    NOT NULL CHECK (state IN ('open', 'verified', 'dead')),
    ip                 TEXT,
    country            TEXT,
    created_at         BIGINT  NOT NULL,
    expires_at         BIGINT  NOT NULL,
    passkey_challenge  TEXT,
    merchant_user_id   TEXT
);
INSERT INTO challenges_new (id, purpose, user_id, operator_id, session_id, device_id, subject_id, methods,
    sms_code_hash, sms_sends, failures, state, ip, country, created_at, expires_at, passkey_challenge)
    SELECT id, purpose, user_id, operator_id, session_id, device_id, subject_id, methods, sms_code_hash, sms_sends,
        failures, state, ip, country, created_at, expires_at, passkey_challenge FROM challenges;
DROP TABLE challenges;
ALTER TABLE challenges_new RENAME TO challenges;
