-- Risk rules on login too. SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE risk_rules_next (
    id          TEXT    PRIMARY KEY,
    event       TEXT    NOT NULL CHECK (event IN ('login', 'topup', 'payment', 'card_link')),
    priority    BIGINT  NOT NULL,
    conditions  TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('allow', 'step_up', 'hold', 'decline')),
    enabled     BIGINT  NOT NULL DEFAULT 1,
    updated_at  BIGINT  NOT NULL
);
INSERT INTO risk_rules_next (id, event, priority, conditions, outcome, enabled, updated_at)
    SELECT id, event, priority, conditions, outcome, enabled, updated_at FROM risk_rules;
DROP TABLE risk_rules;
ALTER TABLE risk_rules_next RENAME TO risk_rules;

-- The previous login of a user is its newest session; impossible travel compares with it.
CREATE INDEX sessions_user_created ON sessions (user_id, created_at);
