-- DDL run on the source while the Pagila trial streams, with
-- RESHARD_TRIAL_GENERAL='resharding_ddl = "replicate"' (docs/ddl.md):
-- my own SQL against Pagila's tables, each statement among writes that
-- use it. A column added with a default on a sharded table and written,
-- an enum value added and used by a new row, a column renamed and
-- written through its new name, an index built concurrently, a table
-- created (sharded by customer_id, a serial key, foreign keys to a
-- sharded and an omni table) with rows in the same and a later
-- transaction, a column dropped, a comment, a table created and dropped.
ALTER TABLE public.customer ADD COLUMN loyalty_tier text NOT NULL DEFAULT 'standard';
UPDATE public.customer SET loyalty_tier = 'gold' WHERE customer_id % 11 = 0;
INSERT INTO public.customer (store_id, first_name, last_name, email, address_id, activebool, create_date, active, loyalty_tier)
  SELECT 1 + g % 2, 'DDL', 'USER' || g, 'ddl' || g || '@example.com', 1 + g % 600, true, current_date, 1, 'silver' FROM generate_series(1, 20) g;
ALTER TYPE public.mpaa_rating ADD VALUE 'UR';
INSERT INTO public.film (title, language_id, rating, fulltext) VALUES ('TRIAL UNRATED', 1, 'UR', ''::tsvector);
ALTER TABLE public.address RENAME COLUMN address2 TO address_line2;
UPDATE public.address SET address_line2 = 'suite ' || address_id WHERE address_id % 9 = 0;
CREATE INDEX CONCURRENTLY rental_return_date_idx ON public.rental (return_date);
BEGIN;
CREATE TABLE public.review (
  review_id serial PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES public.customer (customer_id),
  film_id integer NOT NULL REFERENCES public.film (film_id),
  stars smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.review (customer_id, film_id, stars) SELECT 1 + g % 599, 1 + g % 1000, 1 + g % 5 FROM generate_series(1, 500) g;
COMMIT;
INSERT INTO public.review (customer_id, film_id, stars) SELECT 1 + g % 599, 1 + g % 997, 5 FROM generate_series(1, 100) g;
CREATE INDEX review_customer_idx ON public.review (customer_id);
ALTER TABLE public.staff DROP COLUMN picture;
UPDATE public.staff SET email = lower(email);
COMMENT ON TABLE public.review IS 'film reviews (reshard trial)';
CREATE TABLE public.trial_scratch (id int PRIMARY KEY, v text);
INSERT INTO public.trial_scratch SELECT g, 'x' FROM generate_series(1, 10) g;
DROP TABLE public.trial_scratch;
UPDATE public.rental SET return_date = now() WHERE rental_id % 101 = 0 AND return_date IS NULL;
