--
-- PostgreSQL database dump
--

\restrict GMAYM3nlQtpGaMvF8IChHfkA0koRYOM4FEPP3LsEkZUbVyT53ritivXMBbUcT9B

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: billing; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA billing;


ALTER SCHEMA billing OWNER TO postgres;

--
-- Name: citext; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;


--
-- Name: EXTENSION citext; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION citext IS 'data type for case-insensitive character strings';


--
-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;


--
-- Name: EXTENSION pgcrypto; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';


--
-- Name: address; Type: TYPE; Schema: public; Owner: postgres
--

CREATE TYPE public.address AS (
	street text,
	city text,
	zip text
);


ALTER TYPE public.address OWNER TO postgres;

--
-- Name: email; Type: DOMAIN; Schema: public; Owner: postgres
--

CREATE DOMAIN public.email AS public.citext
	CONSTRAINT email_check CHECK ((VALUE OPERATOR(public.~) '^[^@]+@[^@]+$'::public.citext));


ALTER DOMAIN public.email OWNER TO postgres;

--
-- Name: order_status; Type: TYPE; Schema: public; Owner: postgres
--

CREATE TYPE public.order_status AS ENUM (
    'new',
    'paid',
    'shipped',
    'cancelled'
);


ALTER TYPE public.order_status OWNER TO postgres;

--
-- Name: positive_amount; Type: DOMAIN; Schema: public; Owner: postgres
--

CREATE DOMAIN public.positive_amount AS numeric(12,2)
	CONSTRAINT positive_amount_check CHECK ((VALUE > (0)::numeric));


ALTER DOMAIN public.positive_amount OWNER TO postgres;

--
-- Name: touch(); Type: FUNCTION; Schema: billing; Owner: postgres
--

CREATE FUNCTION billing.touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- a body with ; semicolons ; inside
  NEW.created_at := now();
  RETURN NEW;
END $$;


ALTER FUNCTION billing.touch() OWNER TO postgres;

--
-- Name: order_count(integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.order_count(uid integer) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$SELECT count(*) FROM orders WHERE user_id = uid$$;


ALTER FUNCTION public.order_count(uid integer) OWNER TO postgres;

SET default_tablespace = '';

--
-- Name: events; Type: TABLE; Schema: billing; Owner: postgres
--

CREATE TABLE billing.events (
    id bigint NOT NULL,
    user_id integer NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
)
PARTITION BY RANGE (happened_at);


ALTER TABLE billing.events OWNER TO postgres;

SET default_table_access_method = heap;

--
-- Name: events_2025; Type: TABLE; Schema: billing; Owner: postgres
--

CREATE TABLE billing.events_2025 (
    id bigint NOT NULL,
    user_id integer NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
);


ALTER TABLE billing.events_2025 OWNER TO postgres;

--
-- Name: events_2026; Type: TABLE; Schema: billing; Owner: postgres
--

CREATE TABLE billing.events_2026 (
    id bigint NOT NULL,
    user_id integer NOT NULL,
    happened_at timestamp with time zone NOT NULL,
    payload jsonb
);


ALTER TABLE billing.events_2026 OWNER TO postgres;

--
-- Name: events_id_seq; Type: SEQUENCE; Schema: billing; Owner: postgres
--

ALTER TABLE billing.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME billing.events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: invoices; Type: TABLE; Schema: billing; Owner: postgres
--

CREATE TABLE billing.invoices (
    id bigint NOT NULL,
    user_id integer NOT NULL,
    order_id integer,
    number text NOT NULL,
    amount numeric(12,2) NOT NULL
);


ALTER TABLE billing.invoices OWNER TO postgres;

--
-- Name: invoices_id_seq; Type: SEQUENCE; Schema: billing; Owner: postgres
--

CREATE SEQUENCE billing.invoices_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE billing.invoices_id_seq OWNER TO postgres;

--
-- Name: invoices_id_seq; Type: SEQUENCE OWNED BY; Schema: billing; Owner: postgres
--

ALTER SEQUENCE billing.invoices_id_seq OWNED BY billing.invoices.id;


--
-- Name: users; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.users (
    id integer NOT NULL,
    email public.email NOT NULL,
    name text NOT NULL,
    home public.address,
    api_key text DEFAULT encode(public.gen_random_bytes(16), 'hex'::text) NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.users OWNER TO postgres;

--
-- Name: COLUMN users.email; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON COLUMN public.users.email IS 'login';


--
-- Name: user_totals; Type: VIEW; Schema: billing; Owner: postgres
--

CREATE VIEW billing.user_totals AS
 SELECT u.id AS user_id,
    u.email,
    sum(i.amount) AS total
   FROM (public.users u
     JOIN billing.invoices i ON ((i.user_id = u.id)))
  GROUP BY u.id, u.email;


ALTER TABLE billing.user_totals OWNER TO postgres;

--
-- Name: Weird Names; Inc; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public."Weird Names; Inc" (
    "Id" integer NOT NULL,
    user_id integer NOT NULL,
    "Mixed Case; Col" text,
    "quote""d" integer
);


ALTER TABLE public."Weird Names; Inc" OWNER TO postgres;

--
-- Name: Weird Names; Inc_Id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public."Weird Names; Inc_Id_seq"
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public."Weird Names; Inc_Id_seq" OWNER TO postgres;

--
-- Name: Weird Names; Inc_Id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public."Weird Names; Inc_Id_seq" OWNED BY public."Weird Names; Inc"."Id";


--
-- Name: countries; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.countries (
    code text NOT NULL,
    name text NOT NULL
);


ALTER TABLE public.countries OWNER TO postgres;

--
-- Name: order_items; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.order_items (
    order_id integer NOT NULL,
    product_id integer NOT NULL,
    user_id integer NOT NULL,
    qty smallint NOT NULL,
    CONSTRAINT order_items_qty_check CHECK ((qty > 0))
);

ALTER TABLE ONLY public.order_items REPLICA IDENTITY FULL;


ALTER TABLE public.order_items OWNER TO postgres;

--
-- Name: orders; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.orders (
    id integer NOT NULL,
    user_id integer NOT NULL,
    status public.order_status DEFAULT 'new'::public.order_status NOT NULL,
    total public.positive_amount,
    shipping public.address,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.orders OWNER TO postgres;

--
-- Name: TABLE orders; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.orders IS 'customer orders; sharded by user_id';


--
-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.orders_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.orders_id_seq OWNER TO postgres;

--
-- Name: orders_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id;


--
-- Name: products; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.products (
    id integer NOT NULL,
    sku text NOT NULL,
    price public.positive_amount NOT NULL,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    attrs jsonb DEFAULT '{}'::jsonb NOT NULL,
    price_with_tax numeric GENERATED ALWAYS AS (((price)::numeric * 1.21)) STORED
);


ALTER TABLE public.products OWNER TO postgres;

--
-- Name: products_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

ALTER TABLE public.products ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.products_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: users_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.users_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.users_id_seq OWNER TO postgres;

--
-- Name: users_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
--

ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;


--
-- Name: events_2025; Type: TABLE ATTACH; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.events ATTACH PARTITION billing.events_2025 FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');


--
-- Name: events_2026; Type: TABLE ATTACH; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.events ATTACH PARTITION billing.events_2026 FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2027-01-01 00:00:00+00');


--
-- Name: invoices id; Type: DEFAULT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.invoices ALTER COLUMN id SET DEFAULT nextval('billing.invoices_id_seq'::regclass);


--
-- Name: Weird Names; Inc Id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public."Weird Names; Inc" ALTER COLUMN "Id" SET DEFAULT nextval('public."Weird Names; Inc_Id_seq"'::regclass);


--
-- Name: orders id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);


--
-- Name: users id; Type: DEFAULT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('public.users_id_seq'::regclass);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id, happened_at);


--
-- Name: events_2025 events_2025_pkey; Type: CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.events_2025
    ADD CONSTRAINT events_2025_pkey PRIMARY KEY (id, happened_at);


--
-- Name: events_2026 events_2026_pkey; Type: CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.events_2026
    ADD CONSTRAINT events_2026_pkey PRIMARY KEY (id, happened_at);


--
-- Name: invoices invoices_number_key; Type: CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_number_key UNIQUE (number);


--
-- Name: invoices invoices_pkey; Type: CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_pkey PRIMARY KEY (id);


--
-- Name: Weird Names; Inc Weird Names; Inc_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public."Weird Names; Inc"
    ADD CONSTRAINT "Weird Names; Inc_pkey" PRIMARY KEY ("Id");


--
-- Name: countries countries_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.countries
    ADD CONSTRAINT countries_pkey PRIMARY KEY (code);


--
-- Name: order_items order_items_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT order_items_pkey PRIMARY KEY (order_id, product_id);


--
-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);


--
-- Name: products products_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.products
    ADD CONSTRAINT products_pkey PRIMARY KEY (id);


--
-- Name: users users_email_key; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_email_key UNIQUE (email);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: events_user_idx; Type: INDEX; Schema: billing; Owner: postgres
--

CREATE INDEX events_user_idx ON ONLY billing.events USING btree (user_id);


--
-- Name: events_2025_user_id_idx; Type: INDEX; Schema: billing; Owner: postgres
--

CREATE INDEX events_2025_user_id_idx ON billing.events_2025 USING btree (user_id);


--
-- Name: events_2026_user_id_idx; Type: INDEX; Schema: billing; Owner: postgres
--

CREATE INDEX events_2026_user_id_idx ON billing.events_2026 USING btree (user_id);


--
-- Name: Weird; Index; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX "Weird; Index" ON public."Weird Names; Inc" USING btree ("Mixed Case; Col");


--
-- Name: orders_open_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX orders_open_idx ON public.orders USING btree (created_at) WHERE (status = ANY (ARRAY['new'::public.order_status, 'paid'::public.order_status]));


--
-- Name: orders_user_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX orders_user_idx ON public.orders USING btree (user_id);


--
-- Name: products_attrs_gin; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX products_attrs_gin ON public.products USING gin (attrs);


--
-- Name: products_sku_lower; Type: INDEX; Schema: public; Owner: postgres
--

CREATE UNIQUE INDEX products_sku_lower ON public.products USING btree (lower(sku));


--
-- Name: products_tags_gin; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX products_tags_gin ON public.products USING gin (tags);


--
-- Name: events_2025_pkey; Type: INDEX ATTACH; Schema: billing; Owner: postgres
--

ALTER INDEX billing.events_pkey ATTACH PARTITION billing.events_2025_pkey;


--
-- Name: events_2025_user_id_idx; Type: INDEX ATTACH; Schema: billing; Owner: postgres
--

ALTER INDEX billing.events_user_idx ATTACH PARTITION billing.events_2025_user_id_idx;


--
-- Name: events_2026_pkey; Type: INDEX ATTACH; Schema: billing; Owner: postgres
--

ALTER INDEX billing.events_pkey ATTACH PARTITION billing.events_2026_pkey;


--
-- Name: events_2026_user_id_idx; Type: INDEX ATTACH; Schema: billing; Owner: postgres
--

ALTER INDEX billing.events_user_idx ATTACH PARTITION billing.events_2026_user_id_idx;


--
-- Name: orders orders_touch; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER orders_touch BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION billing.touch();


--
-- Name: invoices invoices_order_id_fkey; Type: FK CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id);


--
-- Name: invoices invoices_user_id_fkey; Type: FK CONSTRAINT; Schema: billing; Owner: postgres
--

ALTER TABLE ONLY billing.invoices
    ADD CONSTRAINT invoices_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);


--
-- Name: order_items order_items_order_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id) ON DELETE CASCADE;


--
-- Name: order_items order_items_product_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id) REFERENCES public.products(id);


--
-- Name: order_items order_items_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.order_items
    ADD CONSTRAINT order_items_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);


--
-- Name: orders orders_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);


--
-- Name: all_tables; Type: PUBLICATION; Schema: -; Owner: postgres
--

CREATE PUBLICATION all_tables FOR ALL TABLES WITH (publish = 'insert, update, delete, truncate');


ALTER PUBLICATION all_tables OWNER TO postgres;

--
-- PostgreSQL database dump complete
--

\unrestrict GMAYM3nlQtpGaMvF8IChHfkA0koRYOM4FEPP3LsEkZUbVyT53ritivXMBbUcT9B

