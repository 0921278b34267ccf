-- libpgq schema, part 5: ticking and maintenance.
--
-- Tick order must follow snapshot order, so ticks of one database are serialised with a
-- transaction-level advisory lock: two tickers (two pgqd's, a pgqd and a libpgq ticker,
-- a manual call) can never interleave. The lock is taken before the tick's snapshot, and
-- in READ COMMITTED each statement after it sees every tick committed before it.

create or replace function pgq._ticker_lock()
returns void as $$
begin
    -- Key: hashtext('pgq'), 1. The libpgq runtime's leader election uses other keys.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgq'), 1);
end;
$$ language plpgsql;

-- Tick one queue if it is due (PGQ-SPEC section 4). Returns the new tick id or NULL.
create or replace function pgq._tick_if_due(i_queue_id int4)
returns bigint as $$
declare
    q       record;
    v_last  record;
    v_gap   interval;
    v_seq   bigint;
    v_new   bigint;
    v_lag   interval;
    v_tick  bigint;
begin
    select qq.queue_event_seq, qq.queue_tick_seq, qq.queue_ticker_max_count,
           qq.queue_ticker_max_lag, qq.queue_ticker_idle_period
      into q
      from pgq.queue qq
     where qq.queue_id = i_queue_id;

    select t.tick_id, t.tick_time, t.tick_event_seq into v_last
      from pgq.tick t
     where t.tick_queue = i_queue_id
     order by t.tick_id desc
     limit 1;

    v_seq := pgq.seq_getval(q.queue_event_seq);
    if v_last.tick_id is not null then
        v_new := v_seq - v_last.tick_event_seq;
        v_lag := pg_catalog.now() - v_last.tick_time;
        if v_new > 0 then
            if v_new < q.queue_ticker_max_count and v_lag < q.queue_ticker_max_lag then
                return null;
            end if;
        else
            -- Idle: tick at most every max_lag/2, backing off to twice the previous gap
            -- until idle_period. With only one tick there is no gap to go by, and the
            -- reference ticks at once; so do we.
            select v_last.tick_time - t.tick_time into v_gap
              from pgq.tick t
             where t.tick_queue = i_queue_id and t.tick_id < v_last.tick_id
             order by t.tick_id desc
             limit 1;
            if v_gap is not null
               and (v_lag < q.queue_ticker_max_lag / 2
                    or (v_lag < v_gap * 2 and v_lag < q.queue_ticker_idle_period)) then
                return null;
            end if;
        end if;
    end if;

    v_tick := pg_catalog.nextval(q.queue_tick_seq::regclass);
    insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
    values (i_queue_id, v_tick, v_seq);
    return v_tick;
end;
$$ language plpgsql;

-- Tick every due queue that is neither paused nor externally ticked. Returns how many
-- queues got a tick.
create or replace function pgq.ticker()
returns bigint as $$
declare
    v_id    int4;
    v_cnt   bigint := 0;
begin
    perform pgq._ticker_lock();
    for v_id in
        select q.queue_id from pgq.queue q
         where not q.queue_external_ticker and not q.queue_ticker_paused
         order by q.queue_id
    loop
        if pgq._tick_if_due(v_id) is not null then
            v_cnt := v_cnt + 1;
        end if;
    end loop;
    return v_cnt;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Tick one queue if due. Returns the new tick id, or NULL when it was not due.
create or replace function pgq.ticker(i_queue_name text)
returns bigint as $$
declare
    q record;
begin
    perform pgq._ticker_lock();
    select qq.queue_id, qq.queue_external_ticker, qq.queue_ticker_paused into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name;
    if not found then
        raise exception 'no such queue';
    end if;
    if q.queue_external_ticker then
        raise exception 'This queue has external tick source.';
    end if;
    if q.queue_ticker_paused then
        raise exception 'Ticker has been paused for this queue';
    end if;
    return pgq._tick_if_due(q.queue_id);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- libpgq's own (not in the reference): tick a queue as soon as it has events its last tick
-- does not cover and that tick is at least i_min_lag old, instead of waiting for
-- ticker_max_count events or ticker_max_lag. Otherwise exactly pgq.ticker(i_queue_name), so
-- an idle queue gets no more ticks than its idle back-off allows. Used by the libpgq ticker
-- service for millisecond latency without changing the queue's settings. Returns the new
-- tick id or NULL.
--
-- The event sequence is only a hint: it moves at insert time (a tick may be taken while the
-- inserting transaction is still open, and then the sequence no longer shows that event as
-- new once it commits), and it reads the same before and after a queue's very first event.
-- So when the sequence shows nothing new, the event table is asked (through its ev_txid
-- index) for committed events the last tick's snapshot did not see.
create or replace function pgq.ticker_eager(i_queue_name text, i_min_lag interval)
returns bigint as $$
declare
    q       record;
    v_last  record;
    v_late  boolean := false;
    v_tick  bigint;
begin
    perform pgq._ticker_lock();
    select qq.queue_id, qq.queue_event_seq, qq.queue_tick_seq, qq.queue_data_pfx,
           qq.queue_external_ticker, qq.queue_ticker_paused
      into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name;
    if not found then
        raise exception 'no such queue';
    end if;
    if q.queue_external_ticker then
        raise exception 'This queue has external tick source.';
    end if;
    if q.queue_ticker_paused then
        raise exception 'Ticker has been paused for this queue';
    end if;

    select t.tick_time, t.tick_event_seq, t.tick_snapshot into v_last
      from pgq.tick t
     where t.tick_queue = q.queue_id
     order by t.tick_id desc
     limit 1;
    if found and i_min_lag is not null
       and pg_catalog.now() - v_last.tick_time >= i_min_lag then
        if pgq.seq_getval(q.queue_event_seq) > v_last.tick_event_seq then
            v_late := true;
        else
            -- Read committed: only rows of committed transactions are seen.
            execute 'select exists (select 1 from ' || q.queue_data_pfx
                 || ' e where e.ev_txid >= $1 or e.ev_txid = any ($2))'
               into v_late
              using txid_snapshot_xmax(v_last.tick_snapshot),
                    array(select txid_snapshot_xip(v_last.tick_snapshot));
        end if;
    end if;
    if v_late then
        v_tick := pg_catalog.nextval(q.queue_tick_seq::regclass);
        insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
        values (q.queue_id, v_tick, pgq.seq_getval(q.queue_event_seq));
        return v_tick;
    end if;
    return pgq._tick_if_due(q.queue_id);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Record a tick that comes from an external source (e.g. a cascaded queue copying its
-- provider's ticks). Only for queues with external_ticker set and not paused.
create or replace function pgq.ticker(i_queue_name text, i_tick_id bigint,
                                      i_orig_timestamp timestamptz, i_event_seq bigint)
returns bigint as $$
declare
    q record;
begin
    perform pgq._ticker_lock();
    select qq.queue_id, qq.queue_event_seq, qq.queue_tick_seq into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name and qq.queue_external_ticker
       and not qq.queue_ticker_paused;
    if not found then
        raise exception 'queue not found or ticker disabled: %', i_queue_name;
    end if;
    insert into pgq.tick (tick_queue, tick_id, tick_time, tick_event_seq)
    values (q.queue_id, i_tick_id, i_orig_timestamp, i_event_seq);
    -- Keep our own sequences ahead of what the source handed us.
    perform pgq.seq_setval(q.queue_tick_seq, i_tick_id);
    perform pgq.seq_setval(q.queue_event_seq, i_event_seq);
    return i_tick_id;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Make the next ticker() call tick this queue, by moving its event counter well past
-- max_count: to nextval + 2 * max_count + 1000, as the reference does, so tools that look
-- at the counter see the same. Paused and externally ticked queues are left alone. Returns
-- the queue's last tick id, NULL for an unknown queue.
create or replace function pgq.force_tick(i_queue_name text)
returns bigint as $$
declare
    q       record;
    v_tick  bigint;
begin
    select qq.queue_id, qq.queue_event_seq, qq.queue_ticker_max_count,
           qq.queue_ticker_paused, qq.queue_external_ticker
      into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name;
    if not found then
        return null;
    end if;
    if not q.queue_ticker_paused and not q.queue_external_ticker then
        perform pg_catalog.setval(q.queue_event_seq::regclass,
            pg_catalog.nextval(q.queue_event_seq::regclass)
                + q.queue_ticker_max_count * 2 + 1000);
    end if;
    select max(t.tick_id) into v_tick from pgq.tick t where t.tick_queue = q.queue_id;
    return v_tick;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Move up to 10 due retry events (the reference's batch size, so the counts agree) back
-- into their queues: a new row with the same ev_id in the current table, visible to the
-- owning consumer only, in the caller's transaction (so its new txid puts it into a future
-- batch). Returns how many were moved; callers repeat until 0.
create or replace function pgq.maint_retry_events()
returns integer as $$
declare
    r      record;
    v_cnt  integer := 0;
begin
    for r in
        delete from pgq.retry_queue rq
         where (rq.ev_owner, rq.ev_id) in (
                select x.ev_owner, x.ev_id
                  from pgq.retry_queue x
                 where x.ev_retry_after <= pg_catalog.now()
                 order by x.ev_retry_after
                 limit 10
                   for update skip locked)
        returning rq.*
    loop
        -- The reference re-inserts through insert_event_raw, which takes a sequence value
        -- even for a given ev_id; do the same so event counters agree.
        perform pg_catalog.nextval(qq.queue_event_seq::regclass)
           from pgq.queue qq where qq.queue_id = r.ev_queue;
        perform pgq._insert_event_into(r.ev_queue, r.ev_id, r.ev_time, r.ev_owner, r.ev_retry,
            r.ev_type, r.ev_data, r.ev_extra1, r.ev_extra2, r.ev_extra3, r.ev_extra4);
        v_cnt := v_cnt + 1;
    end loop;
    return v_cnt;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Rotation step 1: switch inserts to the next table. Only when the rotation period has
-- passed, the previous rotation is complete (step 2 done), and every consumer has moved
-- past the previous switch, so the table being emptied holds nothing anyone still needs.
-- Returns 0 whether or not it rotated, as the reference does (look at queue_cur_table).
create or replace function pgq.maint_rotate_tables_step1(i_queue_name text)
returns integer as $$
declare
    q       record;
    v_next  int4;
    v_tbl   text;
begin
    select qq.queue_id, qq.queue_data_pfx, qq.queue_ntables, qq.queue_cur_table,
           qq.queue_rotation_period, qq.queue_switch_time,
           qq.queue_switch_step1, qq.queue_switch_step2
      into q
      from pgq.queue qq
     where qq.queue_name = i_queue_name
       for update;
    -- Due strictly after the period, as in the reference (and maint_operations).
    if not found
       or q.queue_switch_step2 is null
       or q.queue_rotation_period is null
       or q.queue_switch_time + q.queue_rotation_period >= pg_catalog.now()
    then
        return 0;
    end if;

    -- A consumer whose position may still include transactions older than the previous
    -- step-2 mark could need the table before the current one: wait for it. (A tick whose
    -- xmin is the mark itself waits too: not strictly needed, but the reference does, and a
    -- tool must see the same rotation decisions on both. A position whose tick is missing
    -- cannot be judged, so it waits too.) Idle pgq_coop sub-consumers have no position
    -- (NULL sub_last_tick) and need nothing.
    if exists (select 1
                 from pgq.subscription s
                 left join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
                where s.sub_queue = q.queue_id
                  and s.sub_last_tick is not null
                  and (t.tick_id is null
                       or txid_snapshot_xmin(t.tick_snapshot) <= q.queue_switch_step2))
    then
        return 0;
    end if;

    v_next := (q.queue_cur_table + 1) % q.queue_ntables;
    v_tbl := q.queue_data_pfx || '_' || v_next::text;
    begin
        -- Never wait here: a reader holding the table would block inserts behind us.
        execute 'lock table ' || v_tbl || ' in access exclusive mode nowait';
    exception when lock_not_available then
        return 0;
    end;
    execute 'truncate ' || v_tbl;

    update pgq.queue qq
       set queue_cur_table = v_next,
           queue_switch_time = pg_catalog.now(),
           queue_switch_step1 = txid_current(),
           queue_switch_step2 = null
     where qq.queue_id = q.queue_id;

    -- Ticks older than the previous step-2 mark are behind every consumer now (checked
    -- above); drop them as the reference does, but always keep the newest tick so that a
    -- queue without consumers never ends up without a tick to register at.
    delete from pgq.tick t
     where t.tick_queue = q.queue_id
       and txid_snapshot_xmin(t.tick_snapshot) < q.queue_switch_step2
       and t.tick_id < (select max(t2.tick_id) from pgq.tick t2 where t2.tick_queue = q.queue_id);
    return 0;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Rotation step 2, in a later transaction than step 1: record the txid after which no
-- transaction can still be writing to the old table. Returns 0, as the reference does.
--
-- A writer that read the queue row (and so the current table) in a snapshot older than
-- step 1's commit can still insert into the old table, and its txid is assigned only when
-- it first writes, so it may come after a step-2 mark recorded too early. The mark therefore
-- waits (it is left unset, for the next maintenance round to try again) while any session of
-- this database holds a snapshot whose xmin is not past step 1's txid: any snapshot that
-- does not see step 1 has such an xmin. Then every row in the old table has a txid below
-- the mark, taken after the check. This is what lets libpgq insert straight into the current
-- table, checking it in the INSERT itself (one plain statement per event). Autovacuum
-- workers (no user) and our own session do not count.
create or replace function pgq.maint_rotate_tables_step2()
returns integer as $$
begin
    update pgq.queue qq
       set queue_switch_step2 = txid_current()
     where qq.queue_switch_step2 is null
       and not exists (
           select 1
             from pg_catalog.pg_stat_activity a
            where a.datid = (select d.oid from pg_catalog.pg_database d
                              where d.datname = pg_catalog.current_database())
              and a.pid <> pg_catalog.pg_backend_pid()
              and a.usesysid is not null
              and a.backend_xmin is not null
              -- xmin at or before step 1's txid (32-bit xids compared by their age)
              and pg_catalog.age(a.backend_xmin)
                  >= pg_catalog.age((qq.queue_switch_step1 % 4294967296)::text::xid));
    return 0;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Frequently updated tables for a maintenance worker to VACUUM when autovacuum is off
-- (with autovacuum on there is nothing to do): ours, and those of the PGQ add-ons
-- (pgq_ext, pgq_node, londiste) when installed, as the reference lists them.
create or replace function pgq.maint_tables_to_vacuum()
returns setof text as $$
declare
    v_tbl text;
begin
    if pg_catalog.current_setting('autovacuum') = 'on' then
        return;
    end if;
    foreach v_tbl in array array[
        'pgq.subscription', 'pgq.consumer', 'pgq.queue', 'pgq.tick', 'pgq.retry_queue',
        'pgq_ext.completed_tick', 'pgq_ext.completed_batch', 'pgq_ext.completed_event',
        'pgq_ext.partial_batch', 'pgq_node.local_state', 'londiste.seq_info', 'txid.epoch',
        'londiste.completed']
    loop
        if pg_catalog.to_regclass(v_tbl) is not null then
            return next v_tbl;
        end if;
    end loop;
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;

-- The maintenance to run now, one operation per row, each meant for its own transaction:
-- (function, argument) calls "select function(argument)" (no argument: "select
-- function()"); the function name 'vacuum' means VACUUM of the table in func_arg.
create or replace function pgq.maint_operations(out func_name text, out func_arg text)
returns setof record as $$
declare
    q        record;
    v_f      text;
    v_step2  boolean := false;
begin
    for q in
        select qq.queue_name, qq.queue_rotation_period, qq.queue_switch_time,
               qq.queue_switch_step2
          from pgq.queue qq
         order by qq.queue_name
    loop
        if q.queue_switch_step2 is null then
            v_step2 := true;
        elsif q.queue_switch_time + q.queue_rotation_period < pg_catalog.now() then
            func_name := 'pgq.maint_rotate_tables_step1';
            func_arg := q.queue_name;
            v_step2 := true;
            return next;
        end if;
    end loop;
    if v_step2 then
        func_name := 'pgq.maint_rotate_tables_step2';
        func_arg := null;
        return next;
    end if;
    for q in
        select qq.queue_name, qq.queue_extra_maint
          from pgq.queue qq
         where qq.queue_extra_maint is not null
         order by qq.queue_name
    loop
        foreach v_f in array q.queue_extra_maint loop
            func_name := v_f;
            func_arg := q.queue_name;
            return next;
        end loop;
    end loop;
    for v_f in select * from pgq.maint_tables_to_vacuum() loop
        func_name := 'vacuum';
        func_arg := v_f;
        return next;
    end loop;

    -- The PGQ add-ons' periodic work, when they are installed (as the reference lists it):
    -- cascade watermarks on root nodes, londiste's sequence checks and its own maintenance.
    if exists (select 1 from pg_catalog.pg_proc p
                 join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'pgq_node' and p.proname = 'maint_watermark') then
        func_name := 'pgq_node.maint_watermark';
        for v_f in execute 'select n.queue_name from pgq_node.node_info n
                             where n.node_type = ''root'' order by 1'
        loop
            func_arg := v_f;
            return next;
        end loop;
    end if;
    if exists (select 1 from pg_catalog.pg_proc p
                 join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'londiste' and p.proname = 'root_check_seqs') then
        func_name := 'londiste.root_check_seqs';
        for v_f in execute 'select distinct s.queue_name
                              from londiste.seq_info s
                              join pgq_node.node_info n on n.queue_name = s.queue_name
                             where s.local and n.node_type = ''root'' order by 1'
        loop
            func_arg := v_f;
            return next;
        end loop;
    end if;
    if exists (select 1 from pg_catalog.pg_proc p
                 join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                where n.nspname = 'londiste' and p.proname = 'periodic_maintenance') then
        func_name := 'londiste.periodic_maintenance';
        func_arg := null;
        return next;
    end if;
    return;
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;
