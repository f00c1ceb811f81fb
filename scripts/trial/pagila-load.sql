-- A pgbench script run on Pagila's source while it is copied and streamed
-- (RESHARD_TRIAL_LOAD): my own SQL. Rentals move between customers (so
-- between shards, under the default replica identity), payments change in
-- place, customers are touched; each transaction commits at once.
\set r random(1, 16049)
\set c random(1, 599)
\set k random(1, 599)
BEGIN;
UPDATE public.rental SET customer_id = :c, last_update = now() WHERE rental_id = :r;
UPDATE public.payment SET amount = amount + 0.01 WHERE rental_id = :r;
UPDATE public.customer SET last_update = now() WHERE customer_id = :k;
END;
