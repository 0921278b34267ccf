-- libpgq schema, part 1: internal helpers used by the public API.
--
-- Conventions for every function in this schema:
-- * SECURITY DEFINER functions pin search_path to pg_catalog, pg_temp so that nothing a
--   caller puts on its own search_path can shadow an operator or function we call; all
--   pgq objects are therefore schema-qualified.
-- * Parameters are referenced through table-qualified column names to avoid ambiguity with
--   parameter names, which keep the reference's names so named-argument calls still work.
-- * Dynamic SQL only ever splices identifiers we generated ourselves (pgq.event_<id>_<n>)
--   or values through format('%L') / USING.

-- Split a possibly schema-qualified name and quote both parts; "public" when unqualified.
create or replace function pgq.quote_fqname(i_name text)
returns text as $$
declare
    v_dot int4;
begin
    if i_name is null then
        return null;
    end if;
    v_dot := pg_catalog.strpos(i_name, '.');
    if v_dot > 0 then
        return pg_catalog.quote_ident(pg_catalog.substr(i_name, 1, v_dot - 1))
            || '.' || pg_catalog.quote_ident(pg_catalog.substr(i_name, v_dot + 1));
    end if;
    return 'public.' || pg_catalog.quote_ident(i_name);
end;
$$ language plpgsql strict immutable set search_path = pg_catalog, pg_temp;

-- Current value of a sequence (its last_value) without consuming a number.
create or replace function pgq.seq_getval(i_seq_name text)
returns bigint as $$
declare
    v_last  bigint;
begin
    execute 'select last_value from ' || pgq.quote_fqname(i_seq_name) into v_last;
    return v_last;
end;
$$ language plpgsql strict set search_path = pg_catalog, pg_temp;

-- Ticks record a queue's event sequence as its last_value (seq_getval), as the reference
-- does, so tick_event_seq, ev_new and pending_events read the same on both. (A sequence
-- that was never used and one that handed out its first value both read 1, so the very
-- first event of a new queue does not count as new: the reference's quirk, kept.) An
-- earlier libpgq revision had a helper for that count; upgrades remove it.
drop function if exists pgq._seq_used(text);

-- Like setval() but never moves a sequence backwards; returns the resulting value.
create or replace function pgq.seq_setval(i_seq_name text, i_new_value int8)
returns bigint as $$
declare
    v_fq   text := pgq.quote_fqname(i_seq_name);
    v_cur  bigint;
begin
    v_cur := pgq.seq_getval(i_seq_name);
    if i_new_value > v_cur then
        perform pg_catalog.setval(v_fq, i_new_value);
        return i_new_value;
    end if;
    return v_cur;
end;
$$ language plpgsql strict set search_path = pg_catalog, pg_temp;

-- Copy table privileges for the pgq roles onto a queue's event tables and sequences.
-- Missing roles (no CREATEROLE at install time) are skipped.
create or replace function pgq.grant_perms(x_queue_name text)
returns integer as $$
declare
    q       record;
    v_tbl   text;
    v_n     int4;
    v_stmts text[] := '{}';
    v_s     text;
begin
    select qq.queue_data_pfx, qq.queue_ntables, qq.queue_event_seq, qq.queue_tick_seq
      into q
      from pgq.queue qq
     where qq.queue_name = x_queue_name;
    if not found then
        raise exception 'Queue not found';
    end if;
    for v_n in -1 .. q.queue_ntables - 1 loop
        if v_n < 0 then
            v_tbl := q.queue_data_pfx;
        else
            v_tbl := q.queue_data_pfx || '_' || v_n::text;
        end if;
        v_stmts := v_stmts
            || ('grant select on ' || v_tbl || ' to pgq_reader')
            || ('grant insert on ' || v_tbl || ' to pgq_writer')
            || ('grant select, insert, truncate on ' || v_tbl || ' to pgq_admin');
    end loop;
    v_stmts := v_stmts
        || ('grant usage, select on sequence ' || q.queue_event_seq || ' to pgq_writer, pgq_reader')
        || ('grant usage, select, update on sequence ' || q.queue_event_seq || ' to pgq_admin')
        || ('grant select on sequence ' || q.queue_tick_seq || ' to pgq_reader')
        || ('grant usage, select, update on sequence ' || q.queue_tick_seq || ' to pgq_admin');
    foreach v_s in array v_stmts loop
        begin
            execute v_s;
        exception when undefined_object then
            null; -- role not present on this cluster
        end;
    end loop;
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Storage settings for a queue's event tables: rows are only ever inserted and whole
-- tables truncated at rotation, so pages are packed full and autovacuum (which would only
-- scan them for nothing, insert-triggered since PostgreSQL 13) is off for them and their
-- TOAST tables, as the reference sets them. Returns 1, or 0 for an unknown queue.
create or replace function pgq.tune_storage(i_queue_name text)
returns integer as $$
declare
    q   record;
    v_n int4;
begin
    select qq.queue_data_pfx, qq.queue_ntables into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name;
    if not found then
        return 0;
    end if;
    for v_n in 0 .. q.queue_ntables - 1 loop
        execute 'alter table ' || q.queue_data_pfx || '_' || v_n::text
             || ' set (fillfactor = 100, autovacuum_enabled = off,'
             || ' toast.autovacuum_enabled = off)';
    end loop;
    return 1;
end;
$$ language plpgsql strict security definer set search_path = pg_catalog, pg_temp;

-- Kept for API compatibility with tools that call it after upgrading the reference
-- extension; libpgq's installer upgrades the schema itself, so there is nothing left to do.
create or replace function pgq.upgrade_schema()
returns int4 as $$
begin
    return 0;
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;

-- Event tables one batch has to read. Rotation guarantees a batch never spans more than
-- the current table and the one before it:
-- * the previous table is needed while the batch starts before the step-2 mark (or
--   step 2 has not happened yet);
-- * the current table is needed once the batch ends after the step-1 mark.
-- The rule, on values the caller already read (batch_event_sql reads them with everything
-- else it needs in one query). Plain SQL without settings, so the planner can inline it.
create or replace function pgq._batch_tables(
    i_pfx text, i_ntables int4, i_cur_table int4, i_step1 bigint, i_step2 bigint,
    i_prev_snap txid_snapshot, i_cur_snap txid_snapshot)
returns text[] as $$
    select pg_catalog.array_remove(array[
        case when i_step2 is null or pg_catalog.txid_snapshot_xmin(i_prev_snap) < i_step2
             then i_pfx || '_' || ((i_cur_table + i_ntables - 1) % i_ntables)::text end,
        case when pg_catalog.txid_snapshot_xmax(i_cur_snap) > i_step1
             then i_pfx || '_' || i_cur_table::text end], null)
$$ language sql immutable;

create or replace function pgq.batch_event_tables(x_batch_id bigint)
returns setof text as $$
declare
    v_tables text[];
begin
    select pgq._batch_tables(q.queue_data_pfx, q.queue_ntables, q.queue_cur_table,
                             q.queue_switch_step1, q.queue_switch_step2,
                             pt.tick_snapshot, ct.tick_snapshot)
      into v_tables
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.tick pt on pt.tick_queue = s.sub_queue and pt.tick_id = s.sub_last_tick
      join pgq.tick ct on ct.tick_queue = s.sub_queue and ct.tick_id = s.sub_next_tick
     where s.sub_batch = x_batch_id;
    if not found then
        raise exception 'batch not found';
    end if;
    return query select pg_catalog.unnest(v_tables);
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;

-- The SELECT that returns the events of one consumer's tick range, ordered by ev_id, from
-- values the caller already read: the consumer's subscription id, the two ticks'
-- snapshots, the tables (_batch_tables) and the older snapshot's in-progress txids that the
-- newer one sees as committed (comma-separated, or null). Shared by batch_event_sql and
-- look_ahead_cursor; it reads no table, so PUBLIC may call it (and _event_sql).
--
-- An event belongs to the range when its transaction is visible in the newer tick's
-- snapshot and was not visible in the older one's. Only two kinds of transaction qualify:
-- those at or above the older snapshot's xmax, and those the older snapshot listed as in
-- progress. The first kind is an ev_txid range scan, the second an explicit list, so the
-- ev_txid index is used and rows committed long before the batch are never visited.
--
-- i_cols is the select list: _event_sql's is the reference's ten columns. look_ahead_cursor
-- asks for every column of the event table in table order (ev_owner too): the scan then
-- needs no projection, and the sort by ev_id copies each row as stored instead of building
-- a new one from its columns (scan and sort of a 10,000-event batch: 3 ms instead of 5 ms
-- on the benchmark machine).
create or replace function pgq._event_select(
    i_cols text, i_sub_id int4, i_prev_snap txid_snapshot, i_cur_snap txid_snapshot,
    i_tables text[], i_xip text)
returns text as $$
declare
    v_cond    text;
    v_tbl     text;
    v_sql     text := '';
    v_lo      bigint;
    v_hi      bigint;
    v_min     bigint;
begin
    -- The range scan: [older xmax, newer xmax). A txid there that is below the newer
    -- snapshot's xmin is visible in it without asking, so the visibility function runs
    -- only for txids at or above that xmin, and not at all when the newer snapshot had
    -- nothing in progress (the usual case; it is a call per row otherwise).
    v_lo := txid_snapshot_xmax(i_prev_snap);
    v_hi := txid_snapshot_xmax(i_cur_snap);
    v_min := txid_snapshot_xmin(i_cur_snap);
    v_cond := pg_catalog.format('ev_txid >= %s and ev_txid < %s', v_lo, v_hi);
    if v_min < v_hi then
        if v_min > v_lo then
            v_cond := v_cond || pg_catalog.format(' and (ev_txid < %s or', v_min);
        else
            v_cond := v_cond || ' and (';
        end if;
        v_cond := v_cond || pg_catalog.format(
            ' txid_visible_in_snapshot(ev_txid, %L::txid_snapshot))', i_cur_snap::text);
    end if;
    v_cond := '(' || v_cond || ')';

    if i_xip is not null then
        v_cond := '(' || v_cond || ' or ev_txid in (' || i_xip || '))';
    end if;

    v_cond := v_cond || pg_catalog.format(' and (ev_owner is null or ev_owner = %s)', i_sub_id);

    foreach v_tbl in array i_tables loop
        if v_sql <> '' then
            v_sql := v_sql || ' union all ';
        end if;
        v_sql := v_sql || 'select ' || i_cols || ' from ' || v_tbl || ' where ' || v_cond;
    end loop;
    if v_sql = '' then
        -- No table can hold events of this range (cannot happen with a sane rotation
        -- state); return an empty result of the right shape.
        v_sql := 'select ' || i_cols || ' from pgq.event_template where false';
    end if;
    return v_sql || ' order by 1';
end;
$$ language plpgsql stable set search_path = pg_catalog, pg_temp;

-- _event_select with the columns of the reference's batch_event_sql.
create or replace function pgq._event_sql(
    i_sub_id int4, i_prev_snap txid_snapshot, i_cur_snap txid_snapshot, i_tables text[],
    i_xip text)
returns text as $$
    select pgq._event_select(
        'ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, '
        'ev_extra1, ev_extra2, ev_extra3, ev_extra4',
        i_sub_id, i_prev_snap, i_cur_snap, i_tables, i_xip)
$$ language sql stable set search_path = pg_catalog, pg_temp;

-- The SELECT that returns one batch's events for its consumer, ordered by ev_id.
create or replace function pgq.batch_event_sql(x_batch_id bigint)
returns text as $$
declare
    b         record;
begin
    -- Everything in one query: the snapshots, the tables (batch_event_tables' rule) and
    -- the older snapshot's in-progress txids that the newer one sees as committed.
    select s.sub_id, pt.tick_snapshot as prev_snap, ct.tick_snapshot as cur_snap,
           pgq._batch_tables(q.queue_data_pfx, q.queue_ntables, q.queue_cur_table,
                             q.queue_switch_step1, q.queue_switch_step2,
                             pt.tick_snapshot, ct.tick_snapshot) as tables,
           (select pg_catalog.string_agg(x::text, ',' order by x)
              from txid_snapshot_xip(pt.tick_snapshot) x
             where txid_visible_in_snapshot(x, ct.tick_snapshot)) as xip
      into b
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.tick pt on pt.tick_queue = s.sub_queue and pt.tick_id = s.sub_last_tick
      join pgq.tick ct on ct.tick_queue = s.sub_queue and ct.tick_id = s.sub_next_tick
     where s.sub_batch = x_batch_id;
    if not found then
        raise exception 'batch not found';
    end if;
    return pgq._event_sql(b.sub_id, b.prev_snap, b.cur_snap, b.tables, b.xip);
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;

-- Insert one event row into a queue's current table, bypassing the insert checks. Used by
-- insert_event_raw after its checks and by maint_retry_events to re-queue retries.
create or replace function pgq._insert_event_into(
    i_queue_id int4, i_ev_id bigint, i_ev_time timestamptz, i_ev_owner int4, i_ev_retry int4,
    i_ev_type text, i_ev_data text,
    i_ev_extra1 text, i_ev_extra2 text, i_ev_extra3 text, i_ev_extra4 text)
returns bigint as $$
declare
    q       record;
    v_id    bigint := i_ev_id;
begin
    -- Take the txid before reading the current table: were it taken only by the INSERT,
    -- a rotation completing (step 1 and step 2) in between would leave this row in the old
    -- table with a txid after the step-2 mark, where no batch looks for it.
    perform txid_current();
    select qq.queue_data_pfx, qq.queue_cur_table, qq.queue_event_seq
      into q
      from pgq.queue qq
     where qq.queue_id = i_queue_id;
    if not found then
        raise exception 'No such queue';
    end if;
    if v_id is null then
        v_id := pg_catalog.nextval(q.queue_event_seq::regclass);
    end if;
    execute 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table::text
         || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
         || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
        using v_id, coalesce(i_ev_time, pg_catalog.now()), i_ev_owner, i_ev_retry,
              i_ev_type, i_ev_data, i_ev_extra1, i_ev_extra2, i_ev_extra3, i_ev_extra4;
    return v_id;
end;
-- No SECURITY DEFINER or SET here: only our own definer functions call it (PUBLIC cannot),
-- and they have pinned search_path already; skipping the SET keeps the per-event cost low.
$$ language plpgsql;

-- Validate a queue or consumer name given to an admin function.
create or replace function pgq._check_name(i_kind text, i_name text)
returns void as $$
begin
    if i_name is null then
        raise exception 'Invalid NULL value';
    end if;
    if pg_catalog.btrim(i_name) = '' then
        raise exception 'Invalid % name: must not be empty', i_kind;
    end if;
    if pg_catalog.length(i_name) > 500 then
        raise exception 'Invalid % name: longer than 500 characters', i_kind;
    end if;
end;
$$ language plpgsql immutable set search_path = pg_catalog, pg_temp;
