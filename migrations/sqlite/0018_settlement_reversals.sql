-- A settlement's lines may be reversals too: a payment reversed after its day closed lands in the
-- next settlement as a line of what it gave back. SQLite cannot change a CHECK: the table is rebuilt.
CREATE TABLE settlement_lines_new (
    settlement_id  TEXT    NOT NULL REFERENCES settlements (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('payment', 'refund', 'reversal')),
    item_id        TEXT    NOT NULL,
    store_id       TEXT    NOT NULL,
    amount         BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (kind, item_id)
);
INSERT INTO settlement_lines_new (settlement_id, kind, item_id, store_id, amount, created_at)
    SELECT settlement_id, kind, item_id, store_id, amount, created_at FROM settlement_lines;
DROP TABLE settlement_lines;
ALTER TABLE settlement_lines_new RENAME TO settlement_lines;
CREATE INDEX settlement_lines_settlement ON settlement_lines (settlement_id);
