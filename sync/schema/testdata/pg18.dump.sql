--
-- PostgreSQL database dump
--

\restrict Ua7Lk2PqXv9Rz0Ws4Ye1Td8Hb3Nm6Jc5Gf2Ai7Os9Er4Ku1Vx3

-- Dumped from database version 18.4
-- Dumped by pg_dump version 18.4

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: docs; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.docs (
    id bigint NOT NULL,
    customer_id integer NOT NULL,
    body jsonb NOT NULL
);


ALTER TABLE public.docs OWNER TO postgres;

--
-- Name: docs_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres
--

ALTER TABLE public.docs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.docs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: doc_items; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.doc_items AS
 SELECT d.id,
    jt.ord,
    jt.sku,
    jt.qty,
    jt.tags,
    jt.part
   FROM public.docs d,
    LATERAL JSON_TABLE(
            d.body, '$."items"[*]' AS json_table_path_0
            COLUMNS (
                ord FOR ORDINALITY,
                sku text PATH '$."sku"',
                qty integer PATH '$."qty"' DEFAULT 1 ON EMPTY,
                tags jsonb PATH '$."tags"' WITH UNCONDITIONAL WRAPPER KEEP QUOTES,
                NESTED PATH '$."parts"[*]' AS json_table_path_1
                COLUMNS (
                    part text PATH '$'
                )
            )
        ) jt;


ALTER VIEW public.doc_items OWNER TO postgres;

--
-- Name: doc_summary; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.doc_summary AS
 SELECT id,
    JSON_VALUE(body, '$."title"' RETURNING text DEFAULT 'untitled'::text ON EMPTY) AS title,
    JSON_QUERY(body, '$."items"' RETURNING jsonb WITH CONDITIONAL WRAPPER KEEP QUOTES) AS items,
    JSON_EXISTS(body, '$."archived"') AS archived,
    JSON_SERIALIZE(body RETURNING text) AS raw,
    JSON((body)::text) AS parsed,
    JSON_SCALAR(id) AS idj
   FROM public.docs;


ALTER VIEW public.doc_summary OWNER TO postgres;

--
-- Name: stock; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.stock (
    sku text NOT NULL,
    qty integer NOT NULL
);


ALTER TABLE public.stock OWNER TO postgres;

--
-- Name: restock(text, integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.restock(p_sku text, p_qty integer) RETURNS TABLE(action text, sku text)
    LANGUAGE sql
    BEGIN ATOMIC
 MERGE INTO public.stock s
    USING ( SELECT restock.p_sku AS sku,
             restock.p_qty AS qty) n
    ON (s.sku = n.sku)
    WHEN MATCHED
     THEN UPDATE SET qty = (s.qty + n.qty)
    WHEN NOT MATCHED
     THEN INSERT (sku, qty)
      VALUES (n.sku, n.qty)
   RETURNING MERGE_ACTION() AS "merge_action",
     s.sku;
END;


ALTER FUNCTION public.restock(p_sku text, p_qty integer) OWNER TO postgres;

--
-- Name: docs docs_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.docs
    ADD CONSTRAINT docs_pkey PRIMARY KEY (id);


--
-- Name: stock stock_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.stock
    ADD CONSTRAINT stock_pkey PRIMARY KEY (sku);


--
-- Name: docs_customer_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX docs_customer_id_idx ON public.docs USING btree (customer_id);


--
-- Name: all_tables; Type: PUBLICATION; Schema: -; Owner: postgres
--

CREATE PUBLICATION all_tables FOR ALL TABLES WITH (publish = 'insert, update, delete, truncate');


ALTER PUBLICATION all_tables OWNER TO postgres;

--
-- PostgreSQL database dump complete
--

\unrestrict Ua7Lk2PqXv9Rz0Ws4Ye1Td8Hb3Nm6Jc5Gf2Ai7Os9Er4Ku1Vx3

