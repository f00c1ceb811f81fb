-- Writes on each new shard after CUTOVER in the Chinook trial
-- (RESHARD_TRIAL_CUTOVER_WRITES; my own SQL against Chinook's tables).
-- Ids come from the GENERATED ALWAYS identities: customer_id is the
-- sharding key, so each shard's generator must hand out ids that belong
-- on that shard, unique across shards; invoice_id is not the key (its
-- values interleave across shards). The rows reach the old database by
-- reverse replication, whose identity columns are GENERATED ALWAYS too.
INSERT INTO customer (first_name, last_name, email, country)
  SELECT 'Cut', 'Over ' || g, 'cutover' || g || '@example.com', 'Norway' FROM generate_series(1, 300) g;
INSERT INTO invoice (customer_id, invoice_date, billing_country, total)
  SELECT c.customer_id, TIMESTAMP '2026-12-02 00:00' + (c.customer_id || ' seconds')::interval, 'Norway', 1.99
  FROM customer c WHERE c.first_name = 'Cut' AND NOT EXISTS (SELECT 1 FROM invoice i WHERE i.customer_id = c.customer_id);
UPDATE customer SET company = 'after cutover' WHERE customer_id % 5 = 0;
UPDATE invoice SET total = total + 1 WHERE invoice_id % 7 = 0;
