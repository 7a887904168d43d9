-- Identity: users, sign-ups, challenges, sessions, devices, second factors, resets, operators;
-- risk: failure events, throttle state and alerts. Times are BIGINT milliseconds (UTC).

CREATE TABLE users (
    id                  TEXT    PRIMARY KEY,
    phone               TEXT    NOT NULL UNIQUE,
    email               TEXT    NOT NULL UNIQUE,
    password_hash       TEXT    NOT NULL,
    wallet_account_id   BIGINT  NOT NULL REFERENCES accounts (id),
    totp_secret         TEXT,
    totp_pending        TEXT,
    totp_last_step      BIGINT  NOT NULL DEFAULT 0,
    cooling_off_until   BIGINT  NOT NULL DEFAULT 0,
    cooling_off_reason  TEXT,
    credentials_changed_at BIGINT NOT NULL,
    created_at          BIGINT  NOT NULL
);

CREATE TABLE signups (
    id               TEXT    PRIMARY KEY,
    phone            TEXT    NOT NULL,
    email            TEXT    NOT NULL,
    password_hash    TEXT    NOT NULL,
    phone_code_hash  TEXT,
    email_code_hash  TEXT,
    failures         BIGINT  NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);

CREATE TABLE challenges (
    id             TEXT    PRIMARY KEY,
    purpose        TEXT    NOT NULL CHECK (purpose IN ('login', 'step_up', 'operator_login', 'card')),
    user_id        TEXT,
    operator_id    TEXT,
    session_id     TEXT,
    device_id      TEXT,
    -- What the challenge unlocks besides a session (the card a 3-D Secure challenge activates).
    subject_id     TEXT,
    methods        TEXT    NOT NULL,
    sms_code_hash  TEXT,
    sms_sends      BIGINT  NOT NULL DEFAULT 0,
    failures       BIGINT  NOT NULL DEFAULT 0,
    state          TEXT    NOT NULL CHECK (state IN ('open', 'verified', 'dead')),
    ip             TEXT,
    country        TEXT,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL
);

CREATE TABLE sessions (
    id            TEXT    PRIMARY KEY,
    token_hash    TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL CHECK (kind IN ('user', 'operator')),
    user_id       TEXT,
    operator_id   TEXT,
    role          TEXT,
    device_id     TEXT    NOT NULL,
    ip            TEXT,
    country       TEXT,
    created_at    BIGINT  NOT NULL,
    last_seen_at  BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    step_up_at    BIGINT  NOT NULL DEFAULT 0,
    revoked_at    BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_operator ON sessions (operator_id);

CREATE TABLE device_tokens (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT    NOT NULL REFERENCES users (id),
    device_id         TEXT    NOT NULL,
    token_hash        TEXT    NOT NULL UNIQUE,
    created_at        BIGINT  NOT NULL,
    last_two_step_at  BIGINT  NOT NULL,
    revoked_at        BIGINT
);
CREATE INDEX device_tokens_user ON device_tokens (user_id, device_id);

CREATE TABLE recovery_codes (
    user_id    TEXT    NOT NULL REFERENCES users (id),
    code_hash  TEXT    NOT NULL,
    used_at    BIGINT,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE password_resets (
    id               TEXT    PRIMARY KEY,
    user_id          TEXT,
    sms_code_hash    TEXT,
    email_code_hash  TEXT,
    failures         BIGINT  NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL CHECK (state IN ('open', 'proven', 'done', 'dead')),
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);

CREATE TABLE operators (
    id             TEXT    PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    totp_secret    TEXT    NOT NULL,
    totp_last_step BIGINT  NOT NULL DEFAULT 0,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at     BIGINT  NOT NULL
);

-- Failed attempts, for rolling windows: scope is what was counted (login, code, sms, throttled), key whom.
CREATE TABLE auth_events (
    id     INTEGER PRIMARY KEY,
    scope  TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    at     BIGINT  NOT NULL
);
CREATE INDEX auth_events_key ON auth_events (scope, key, at);
CREATE INDEX auth_events_at ON auth_events (scope, at);

-- Consecutive failures and blocks per account (or unknown login) and per recognised device.
CREATE TABLE throttle_state (
    key           TEXT    PRIMARY KEY,
    consecutive   BIGINT  NOT NULL DEFAULT 0,
    locked_until  BIGINT  NOT NULL DEFAULT 0,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE alerts (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX alerts_kind ON alerts (kind, created_at);
