-- A pgbench script run on Chinook's source while it is copied and streamed
-- (RESHARD_TRIAL_LOAD): my own SQL. Invoices move between customers (so
-- between shards, under the default replica identity), lines change in
-- place, customers are touched; each transaction commits at once.
\set i random(1, 412)
\set c random(1, 59)
BEGIN;
UPDATE invoice SET customer_id = :c, total = total + 0.01 WHERE invoice_id = :i;
UPDATE invoice_line SET quantity = quantity + 1 WHERE invoice_id = :i;
UPDATE customer SET fax = 'load ' || :i WHERE customer_id = :c;
END;
