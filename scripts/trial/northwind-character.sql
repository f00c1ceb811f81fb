-- Run after Northwind's northwind.sql in a trial (docs/real-schemas.md): my
-- own SQL. Microsoft's Northwind keys customers by CustomerID nchar(5), and
-- PostgreSQL ports of it (YugabyteDB's sample, for one) by bpchar: here
-- customer_id becomes character(5) everywhere, so that keys shorter than 5
-- characters are blank-padded, and a few such customers are added.
ALTER TABLE orders DROP CONSTRAINT fk_orders_customers;
ALTER TABLE customer_customer_demo DROP CONSTRAINT fk_customer_customer_demo_customers;
ALTER TABLE customers ALTER customer_id TYPE character(5);
ALTER TABLE orders ALTER customer_id TYPE character(5);
ALTER TABLE customer_customer_demo ALTER customer_id TYPE character(5);
ALTER TABLE orders ADD CONSTRAINT fk_orders_customers FOREIGN KEY (customer_id) REFERENCES customers;
ALTER TABLE customer_customer_demo ADD CONSTRAINT fk_customer_customer_demo_customers FOREIGN KEY (customer_id) REFERENCES customers;
INSERT INTO customers (customer_id, company_name, city, country)
  VALUES ('AB', 'Two letters', 'Oslo', 'Norway'), ('ab', 'Two letters, lower case', 'Oslo', 'Norway'),
         ('X', 'One letter', 'Bergen', 'Norway'), ('Ünï', 'Unicode', 'Köln', 'Germany'), (' LEAD', 'Leading blank', 'Lyon', 'France');
UPDATE orders SET customer_id = (ARRAY['AB', 'ab', 'X', 'Ünï', ' LEAD'])[1 + order_id % 5] WHERE order_id % 17 = 0;
