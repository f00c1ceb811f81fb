-- Writes on each new shard after CUTOVER in the Northwind trial
-- (RESHARD_TRIAL_CUTOVER_WRITES; my own SQL against Northwind's tables).
-- Northwind's ids have no defaults (the application picks them), so each
-- shard changes the rows it holds: orders moved between two customers of
-- that shard (the application's router keeps a row on its customer's
-- shard), order lines changed and deleted, customers updated. The changes
-- reach the old database by reverse replication.
UPDATE orders o SET customer_id = n.next, ship_name = 'moved after cutover'
  FROM (SELECT customer_id, lead(customer_id, 1) OVER (ORDER BY customer_id) AS next FROM customers) n
  WHERE o.customer_id = n.customer_id AND n.next IS NOT NULL AND o.order_id % 5 = 0;
UPDATE order_details SET discount = 0.05 WHERE order_id % 3 = 0;
DELETE FROM order_details WHERE order_id % 13 = 0;
UPDATE customers SET phone = '+47 ' || customer_id WHERE customer_id LIKE 'B%' OR customer_id LIKE 'trl%';
