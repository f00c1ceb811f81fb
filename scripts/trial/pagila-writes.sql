-- Writes streamed during the Pagila trial (scripts/realschema-trial.sh):
-- my own SQL against Pagila's tables. Inserts into several partitions,
-- an update moving payments between partitions, rentals moving between
-- customers (so between shards), deletes, and omni-table changes.
BEGIN;
INSERT INTO public.customer (store_id, first_name, last_name, email, address_id, activebool, create_date, active)
  SELECT 1 + g % 2, 'TRIAL', 'USER' || g, 'trial' || g || '@example.com', 1 + g % 600, true, current_date, 1 FROM generate_series(1, 50) g;
INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
  SELECT c.customer_id, 1, (SELECT min(r.rental_id) FROM public.rental r WHERE r.customer_id = c.customer_id), 4.99, TIMESTAMPTZ '2022-02-10 10:00:00+00' + (g || ' hours')::interval
  FROM generate_series(1, 300) g JOIN public.customer c ON c.customer_id = 1 + g % 599;
COMMIT;
UPDATE public.payment SET payment_date = payment_date + interval '31 days' WHERE payment_id % 13 = 0 AND payment_date < '2022-06-01';
UPDATE public.payment SET amount = amount + 1 WHERE payment_id % 7 = 0;
UPDATE public.rental SET customer_id = 1 + (customer_id * 7) % 599 WHERE rental_id % 17 = 0;
DELETE FROM public.payment WHERE payment_id % 29 = 0;
UPDATE public.film SET rental_rate = rental_rate + 0.5 WHERE film_id % 10 = 0;
INSERT INTO public.actor (first_name, last_name) SELECT 'TRIAL', 'ACTOR' || g FROM generate_series(1, 20) g;
DELETE FROM public.film_actor WHERE actor_id = 1;
