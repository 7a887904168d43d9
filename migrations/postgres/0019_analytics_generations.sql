-- Merchants' analytics keep each merchant's closed days in memory (src/merchants/analytics_cache.rs).
-- A change to a payment of a past day (a refund, a reversal; any UPDATE or DELETE, even by hand)
-- moves that day's generation here, in the writer's own transaction, so that every instance learns
-- at its next analytics request which cached days to read again. `day` is the Asia/Tokyo day
-- number ((created_at + 9 h) / 24 h, as the analytics compute it); day -1 stands for the
-- merchant's first visits (`customer_firsts`), which decide who is a new customer. Inserts are not
-- watched: a payment and its basket commit within FOLD_OVERLAP_MS of the moment they carry, and a
-- day is cached only once that has passed after its end (so a busy merchant's payments never
-- queue on a row here). The rows moved are DISTINCT: PostgreSQL refuses to upsert a row twice in
-- one statement (NEW is NULL on a DELETE).
CREATE TABLE analytics_generations (
    merchant_id  TEXT    NOT NULL,
    day          BIGINT  NOT NULL,
    generation   BIGINT  NOT NULL,
    PRIMARY KEY (merchant_id, day)
);
CREATE FUNCTION omamori_payment_analytics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_generations (merchant_id, day, generation)
        SELECT DISTINCT v.merchant_id, v.day, 1 FROM (VALUES
            (OLD.merchant_id, (OLD.created_at + 32400000) / 86400000),
            (NEW.merchant_id, (NEW.created_at + 32400000) / 86400000)) AS v (merchant_id, day)
        WHERE v.merchant_id IS NOT NULL
        ON CONFLICT (merchant_id, day) DO UPDATE SET generation = analytics_generations.generation + 1;
    RETURN NULL;
END
$$;
CREATE FUNCTION omamori_item_analytics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_generations (merchant_id, day, generation)
        SELECT DISTINCT merchant_id, (created_at + 32400000) / 86400000, 1 FROM payments
        WHERE id IN (OLD.payment_id, NEW.payment_id)
        ON CONFLICT (merchant_id, day) DO UPDATE SET generation = analytics_generations.generation + 1;
    RETURN NULL;
END
$$;
CREATE FUNCTION omamori_first_analytics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_generations (merchant_id, day, generation)
        SELECT DISTINCT v.merchant_id, v.day, 1 FROM (VALUES
            (OLD.merchant_id, (OLD.first_at + 32400000) / 86400000), (OLD.merchant_id, -1),
            (NEW.merchant_id, (NEW.first_at + 32400000) / 86400000), (NEW.merchant_id, -1)) AS v (merchant_id, day)
        WHERE v.merchant_id IS NOT NULL
        ON CONFLICT (merchant_id, day) DO UPDATE SET generation = analytics_generations.generation + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER payments_analytics AFTER UPDATE OR DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION omamori_payment_analytics();
CREATE TRIGGER payment_items_analytics AFTER UPDATE OR DELETE ON payment_items
    FOR EACH ROW EXECUTE FUNCTION omamori_item_analytics();
CREATE TRIGGER refund_items_analytics AFTER UPDATE OR DELETE ON refund_items
    FOR EACH ROW EXECUTE FUNCTION omamori_item_analytics();
CREATE TRIGGER customer_firsts_analytics AFTER UPDATE OR DELETE ON customer_firsts
    FOR EACH ROW EXECUTE FUNCTION omamori_first_analytics();
