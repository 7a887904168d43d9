-- A till lists the payments of its own store, newest first.
CREATE INDEX payments_store ON payments (store_id, created_at);
