-- Writes streamed during the Northwind trial (scripts/realschema-trial.sh):
-- my own SQL against Northwind's tables. The sharding key customer_id is a
-- varchar(5): new customers whose ids differ only by case or a trailing
-- space (each hashes on its own), orders moved between customers under the
-- default replica identity (one moved to no customer, a NULL key, and
-- back), an order moved twice in one transaction, customers deleted after
-- their orders moved away, order lines (sharded by order_id) moved to
-- another order, and omni-table changes.
BEGIN;
INSERT INTO customers (customer_id, company_name, city, country)
  VALUES ('TRL1', 'Trial one', 'Oslo', 'Norway'), ('trl1', 'Trial one, lower case', 'Oslo', 'Norway'),
         ('TRL1 ', 'Trial one, trailing space', 'Oslo', 'Norway'), ('Ünï', 'Trial unicode', 'Köln', 'Germany');
INSERT INTO orders (order_id, customer_id, employee_id, order_date, ship_via, freight, ship_name)
  SELECT 20000 + g, (ARRAY['TRL1', 'trl1', 'TRL1 ', 'Ünï'])[1 + g % 4], 1 + g % 9, DATE '2026-12-01', 1 + g % 3, g, 'trial ' || g
  FROM generate_series(1, 200) g;
INSERT INTO order_details (order_id, product_id, unit_price, quantity, discount)
  SELECT 20000 + g, 1 + (g * 7) % 77, 9.5, 1 + g % 5, 0 FROM generate_series(1, 200) g;
COMMIT;
-- moves: every 7th order to the customer 3 places on (in id order)
UPDATE orders o SET customer_id = n.next
  FROM (SELECT customer_id, lead(customer_id, 3, 'ALFKI') OVER (ORDER BY customer_id) AS next FROM customers) n
  WHERE o.customer_id = n.customer_id AND o.order_id % 7 = 0;
-- a NULL key and back, and two moves of one order in a transaction
UPDATE orders SET customer_id = NULL WHERE order_id IN (10250, 10251);
UPDATE orders SET customer_id = 'VINET' WHERE order_id = 10251;
BEGIN;
UPDATE orders SET customer_id = 'TRL1' WHERE order_id = 10260;
UPDATE orders SET customer_id = 'Ünï', ship_name = 'moved twice' WHERE order_id = 10260;
COMMIT;
-- a customer's orders moved away, then the customer deleted
UPDATE orders SET customer_id = 'trl1' WHERE customer_id = 'TRL1 ';
DELETE FROM customers WHERE customer_id = 'TRL1 ';
-- order lines moved to another order (their sharding key is order_id)
UPDATE order_details SET order_id = 20001 WHERE order_id = 10248 AND product_id NOT IN (SELECT product_id FROM order_details WHERE order_id = 20001);
DELETE FROM order_details WHERE order_id % 11 = 0;
UPDATE products SET unit_price = unit_price * 1.1 WHERE product_id % 5 = 0;
UPDATE employees SET notes = notes || ' (trial)' WHERE employee_id = 2;
INSERT INTO customer_demographics VALUES ('TRL', 'trial demographic');
INSERT INTO customer_customer_demo SELECT customer_id, 'TRL' FROM customers WHERE customer_id IN ('TRL1', 'trl1', 'Ünï', 'ALFKI');
