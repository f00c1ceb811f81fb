-- Writes streamed during the Chinook trial (scripts/realschema-trial.sh):
-- my own SQL against Chinook's tables (Chinook_PostgreSql_AutoIncrementPKs:
-- every key GENERATED ALWAYS AS IDENTITY). New customers, invoices and
-- lines taking their ids from the identities, invoices moved between
-- customers (so between shards, under the default replica identity),
-- deletes, and omni-table changes (new artists and albums with identity
-- ids, price updates, a playlist emptied).
BEGIN;
INSERT INTO customer (first_name, last_name, email, country, support_rep_id)
  SELECT 'Trial', 'User ' || g, 'trial' || g || '@example.com', 'Norway', 3 FROM generate_series(1, 40) g;
INSERT INTO invoice (customer_id, invoice_date, billing_country, total)
  SELECT c.customer_id, TIMESTAMP '2026-12-01 10:00' + (g || ' minutes')::interval, 'Norway', 0.99 * (1 + g % 3)
  FROM generate_series(1, 120) g JOIN customer c ON c.email = 'trial' || (1 + g % 40) || '@example.com';
INSERT INTO invoice_line (invoice_id, track_id, unit_price, quantity)
  SELECT i.invoice_id, 1 + i.invoice_id % 3503, 0.99, 1 FROM invoice i WHERE i.billing_country = 'Norway' AND i.invoice_date >= '2026-12-01';
COMMIT;
UPDATE invoice SET customer_id = 1 + (customer_id * 7) % 59, total = total + 1 WHERE invoice_id % 9 = 0;
UPDATE invoice SET customer_id = 2 WHERE invoice_id = 10;
UPDATE invoice SET customer_id = 3 WHERE invoice_id = 10;
DELETE FROM invoice_line WHERE invoice_id % 17 = 0;
DELETE FROM invoice WHERE invoice_id % 17 = 0;
INSERT INTO artist (name) SELECT 'Trial artist ' || g FROM generate_series(1, 10) g;
INSERT INTO album (title, artist_id) SELECT 'Trial album ' || a.artist_id, a.artist_id FROM artist a WHERE a.name LIKE 'Trial artist %';
UPDATE track SET unit_price = unit_price + 0.10 WHERE track_id % 10 = 0;
DELETE FROM playlist_track WHERE playlist_id = 18;
