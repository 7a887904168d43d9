-- Operations: kill switches and account freezes.

-- A switch refuses one kind of action (signups, logins, card_linking, topups, payments, refunds)
-- within a scope until a release is confirmed by a second operator. A freeze is the same, scoped
-- to a user, for every money action, and answers `account_frozen`.
CREATE TABLE switches (
    id                    TEXT    PRIMARY KEY,
    kind                  TEXT    NOT NULL CHECK (kind IN ('switch', 'freeze')),
    name                  TEXT    NOT NULL CHECK (name IN ('signups', 'logins', 'card_linking', 'topups', 'payments', 'refunds')),
    scope_kind            TEXT    NOT NULL CHECK (scope_kind IN ('global', 'merchant', 'user', 'card', 'country')),
    scope_id              TEXT    NOT NULL DEFAULT '',
    reason                TEXT    NOT NULL,
    engaged_at            BIGINT  NOT NULL,
    engaged_by            TEXT    NOT NULL,
    release_requested_by  TEXT,
    release_requested_at  BIGINT,
    released_at           BIGINT,
    released_by           TEXT,
    release_reason        TEXT
);
CREATE INDEX switches_active ON switches (name, released_at);

-- The audit log: append-only, hash-chained (see src/audit).
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE
);

-- Corrections: an operator proposes undoing a fraudulent payment or top-up; a second, different
-- operator approves, and only then does the correcting journal entry post.
CREATE TABLE corrections (
    id            TEXT    PRIMARY KEY,
    target_kind   TEXT    NOT NULL CHECK (target_kind IN ('payment', 'topup')),
    target_id     TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('proposed', 'applied')),
    proposed_by   TEXT    NOT NULL,
    proposed_at   BIGINT  NOT NULL,
    approved_by   TEXT,
    applied_at    BIGINT,
    result        TEXT
);
CREATE INDEX corrections_target ON corrections (target_kind, target_id);

-- Risk rules (data, not code) and the review cases their holds open.
CREATE TABLE risk_rules (
    id          TEXT    PRIMARY KEY,
    event       TEXT    NOT NULL CHECK (event IN ('topup', 'payment', 'card_link')),
    priority    BIGINT  NOT NULL,
    conditions  TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('allow', 'step_up', 'hold', 'decline')),
    enabled     BIGINT  NOT NULL DEFAULT 1,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE reviews (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('topup', 'payment', 'card')),
    subject_id  TEXT,
    user_id     TEXT    NOT NULL,
    rule_id     TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('open', 'approved', 'rejected')),
    created_at  BIGINT  NOT NULL,
    decided_by  TEXT,
    decided_at  BIGINT
);
CREATE INDEX reviews_state ON reviews (state, created_at);
