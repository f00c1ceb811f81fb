-- Writes on Northwind's source while the character(5) trial streams
-- (docs/real-schemas.md): my own SQL. Short, blank-padded keys: customers
-- added, orders moved to them and between them (the default replica
-- identity: order_id does not change), a key changed, customers deleted.
INSERT INTO customers (customer_id, company_name, city, country)
  VALUES ('Q', 'Streamed, one letter', 'Oslo', 'Norway'), ('QR  ', 'Streamed, padded by hand', 'Oslo', 'Norway'), ('ÉÉ', 'Streamed, unicode', 'Nice', 'France');
INSERT INTO orders (order_id, customer_id, employee_id, order_date, ship_via, freight, ship_name)
  SELECT 20000 + g, (ARRAY['Q', 'QR', 'ÉÉ', 'AB'])[1 + g % 4], 1 + g % 9, DATE '2026-12-04', 1 + g % 3, g, 'trial ' || g
  FROM generate_series(1, 200) g;
UPDATE orders SET customer_id = 'X' WHERE order_id % 23 = 0;
UPDATE orders SET customer_id = 'Q   ' WHERE order_id BETWEEN 20001 AND 20040;
UPDATE orders SET customer_id = 'ab', ship_name = 'moved twice' WHERE order_id = 20050;
UPDATE orders SET customer_id = 'ÉÉ' WHERE order_id = 20050;
UPDATE customers SET customer_id = 'ZZ' WHERE customer_id = 'ab' AND NOT EXISTS (SELECT 1 FROM orders WHERE customer_id = 'ab');
DELETE FROM order_details WHERE order_id IN (SELECT order_id FROM orders WHERE customer_id = ' LEAD');
DELETE FROM orders WHERE customer_id = ' LEAD';
DELETE FROM customers WHERE customer_id = ' LEAD';
