-- Writes on each new shard after CUTOVER in the Pagila trial
-- (RESHARD_TRIAL_CUTOVER_WRITES; my own SQL against Pagila's tables).
-- Ids come from the column defaults: customer_id is the sharding key and
-- a serial, so each shard's generator must hand out ids that belong on
-- that shard, unique across shards; rental_id and payment_id are serials
-- that are not the key, interleaved across shards. The rows reach the old
-- database by reverse replication, where a duplicate id would fail.
INSERT INTO public.customer (store_id, first_name, last_name, email, address_id, activebool, create_date, active)
  SELECT (SELECT min(store_id) FROM public.store), 'CUT', 'OVER' || g, 'cutover' || g || '@example.com', (SELECT min(address_id) FROM public.address), true, current_date, 1
  FROM generate_series(1, 1000) g;
INSERT INTO public.rental (rental_date, inventory_id, customer_id, staff_id)
  SELECT TIMESTAMPTZ '2026-12-01 00:00:00+00' + (c.customer_id || ' seconds')::interval, (SELECT min(inventory_id) FROM public.inventory), c.customer_id, (SELECT min(staff_id) FROM public.staff)
  FROM public.customer c WHERE c.first_name = 'CUT' AND NOT EXISTS (SELECT 1 FROM public.rental r WHERE r.customer_id = c.customer_id);
UPDATE public.customer SET last_name = last_name || '+' WHERE customer_id % 5 = 0;
DELETE FROM public.payment WHERE payment_id % 101 = 0;
