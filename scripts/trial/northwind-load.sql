-- A pgbench script run on Northwind's source while it is copied and
-- streamed (RESHARD_TRIAL_LOAD): my own SQL. Orders move between customers
-- (the sharding key is customer_id, a varchar(5); the primary key order_id
-- does not change, so under the default replica identity), order lines
-- change in place, customers are touched; each transaction commits at once.
\set o random(10248, 11077)
\set k random(0, 90)
\set p random(1, 77)
BEGIN;
UPDATE orders SET customer_id = (SELECT customer_id FROM customers ORDER BY customer_id OFFSET :k LIMIT 1), freight = freight + 1 WHERE order_id = :o;
UPDATE order_details SET quantity = quantity + 1 WHERE order_id = :o;
UPDATE customers SET fax = 'load ' || :p WHERE customer_id = (SELECT customer_id FROM customers ORDER BY customer_id OFFSET :k LIMIT 1);
END;
