-- libpgq schema, part 3: producing events.
--
-- Events are inserted in the caller's transaction: they exist iff it commits, and the
-- inserting txid (ev_txid's default) decides which batch they land in.

-- Insert an event with every column given. NULL ev_id takes the queue's next id, NULL
-- ev_time means now(). Refused when the queue's inserts are disabled, unless the session
-- replays changes (session_replication_role = replica).
create or replace function pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz,
    ev_owner integer, ev_retry integer, ev_type text, ev_data text,
    ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns int8 as $$
declare
    q       record;
    v_id    bigint := $2;
    v_seq_id bigint;
    v_key   text;
    v_state text[];
    v_cnt   int4;
begin
    if $1 is null then
        raise exception 'Queue name must not be NULL';
    end if;
    select qq.queue_id, qq.queue_disable_insert, qq.queue_per_tx_limit, qq.queue_event_seq
      into q
      from pgq.queue qq
     where qq.queue_name = $1;
    if not found then
        raise exception 'No such queue';
    end if;
    -- An id is taken from the sequence before the checks and even when the caller gives
    -- one, as the reference does: the sequence then counts every insert attempt the same
    -- way on both (tick_event_seq, ev_new and the ids tools see stay identical).
    v_seq_id := pg_catalog.nextval(q.queue_event_seq::regclass);
    v_id := coalesce(v_id, v_seq_id);
    if q.queue_disable_insert
       and pg_catalog.current_setting('session_replication_role') <> 'replica' then
        raise exception 'Insert into queue disallowed';
    end if;
    if q.queue_per_tx_limit is not null then
        -- Count this transaction's events in a session setting tagged with the txid (a
        -- SET LOCAL would be undone when this function returns).
        v_key := 'pgq.tx_events_' || q.queue_id::text;
        v_state := pg_catalog.string_to_array(
            pg_catalog.current_setting(v_key, true), ':');
        v_cnt := 1;
        if v_state[1] = txid_current()::text then
            v_cnt := v_state[2]::int4 + 1;
        end if;
        if v_cnt > q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX',
                $1, q.queue_per_tx_limit;
        end if;
        perform pg_catalog.set_config(v_key, txid_current()::text || ':' || v_cnt::text, false);
    end if;
    return pgq._insert_event_into(q.queue_id, v_id, $3, $4, $5, $6, $7, $8, $9, $10, $11);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- The producers' hot path: the checks of insert_event_raw and the insert of
-- _insert_event_into in one call, without nested SECURITY DEFINER calls (each costs a
-- function-manager round with a GUC save/restore) and without a second queue lookup.
-- Results and messages are insert_event_raw's; keep the two in step.
create or replace function pgq.insert_event(
    queue_name text, ev_type text, ev_data text,
    ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns bigint as $$
declare
    q       record;
    v_txid  bigint;
    v_id    bigint;
    v_key   text;
    v_state text[];
    v_cnt   int4;
begin
    if $1 is null then
        raise exception 'Queue name must not be NULL';
    end if;
    -- The txid before the queue row (and so the current table) is read: the rotation rule
    -- of _insert_event_into. An assignment, not a query: the read below takes its snapshot
    -- after it.
    v_txid := txid_current();
    select qq.queue_id, qq.queue_disable_insert, qq.queue_per_tx_limit, qq.queue_event_seq,
           qq.queue_data_pfx, qq.queue_cur_table
      into q
      from pgq.queue qq
     where qq.queue_name = $1;
    if not found then
        raise exception 'No such queue';
    end if;
    v_id := pg_catalog.nextval(q.queue_event_seq::regclass);
    if q.queue_disable_insert
       and pg_catalog.current_setting('session_replication_role') <> 'replica' then
        raise exception 'Insert into queue disallowed';
    end if;
    if q.queue_per_tx_limit is not null then
        -- As in insert_event_raw: this transaction's count in a txid-tagged session setting.
        v_key := 'pgq.tx_events_' || q.queue_id::text;
        v_state := pg_catalog.string_to_array(
            pg_catalog.current_setting(v_key, true), ':');
        v_cnt := 1;
        if v_state[1] = v_txid::text then
            v_cnt := v_state[2]::int4 + 1;
        end if;
        if v_cnt > q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX',
                $1, q.queue_per_tx_limit;
        end if;
        perform pg_catalog.set_config(v_key, v_txid::text || ':' || v_cnt::text, false);
    end if;
    execute 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table::text
         || ' (ev_id, ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' values ($1, $2, $3, $4, $5, $6, $7, $8)'
        using v_id, pg_catalog.now(), $2, $3, $4, $5, $6, $7;
    return v_id;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.insert_event(queue_name text, ev_type text, ev_data text)
returns bigint as $$
begin
    return pgq.insert_event($1, $2, $3, null, null, null, null);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- The table that inserts into this queue go to in the current transaction, for bulk
-- loading with COPY or INSERT (ev_id, ev_time and ev_txid default correctly there).
create or replace function pgq.current_event_table(x_queue_name text)
returns text as $$
declare
    q record;
begin
    select qq.queue_data_pfx, qq.queue_cur_table, qq.queue_disable_insert
      into q
      from pgq.queue qq
     where qq.queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not found';
    end if;
    if q.queue_disable_insert
       and pg_catalog.current_setting('session_replication_role') <> 'replica' then
        raise exception 'Writing to queue disabled';
    end if;
    return q.queue_data_pfx || '_' || q.queue_cur_table::text;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Leases for libpgq's direct inserts (revision 9).
--
-- libpgq's Client::send inserts into a queue's current table with one plain statement (see
-- src/direct.rs). It learns the table from pgq._direct_lease, which also grants a lease: a
-- range of transaction ids [lease_from, lease_until) in which the producer may insert into
-- that table without reading pgq.queue again. Its INSERT carries
--     where txid_current() >= lease_from and txid_current() < lease_until
-- which reads no table, so the statement costs what a plain INSERT costs.
--
-- Ending leases. Whatever changes where or whether direct inserts may go (a rotation's new
-- queue_cur_table, queue_disable_insert, queue_per_tx_limit) updates the queue row, and the
-- trigger below then assigns _direct_lease_span() transaction ids, in the same transaction,
-- after that UPDATE statement. Every lease granted before the update ends at or below the first txid
-- after the burn, so no transaction that starts after the change commits can use one: the
-- change applies to direct producers from its commit, as it does to pgq.insert_event.
-- (A lease granted with snapshot xmax X ends at X + span, and X is at most the next txid at
-- the update's time; the burn moves the next txid at least span further.)
--
-- A lease cannot be granted from a queue row whose change is in progress: _direct_lease
-- reads the row FOR SHARE, which waits for an uncommitted update and then reads the row
-- as it committed, and an update waits for that read. It then rolls its lock back at once
-- (a subtransaction), so even a lookup inside a long transaction holds nothing.
--
-- Rotation stays exact: a direct insert with a lease from before step 1 has a txid below
-- the txid after step 1's burn, so below the step-2 mark recorded later, and readers still
-- look in the old table for it (_batch_tables).
--
-- The span trades two costs: a producer looks its table up again once per span of the
-- server's transaction ids (every 25 ms at 40,000 transactions a second), and each change
-- to a queue's row burns a span of ids (1000 ids take about 8 ms; a rotation every two
-- hours per queue).

-- One row that the burn locks, each time in a subtransaction of its own, to be given a
-- transaction id (a row lock needs one).
create table if not exists pgq.direct_lease_burner (
    singleton   boolean primary key default true check (singleton)
);
insert into pgq.direct_lease_burner (singleton) values (true) on conflict do nothing;

create or replace function pgq._direct_lease_span()
returns int8 as $$
    select 1000::int8
$$ language sql immutable;

-- The queue's current table and a lease on it, or no row when the queue does not exist or
-- takes no direct inserts (queue_disable_insert, queue_per_tx_limit), or when the row is
-- being changed in a way this transaction may not wait for (repeatable read).
create or replace function pgq._direct_lease(
    i_queue_name text,
    out queue_id int4, out cur_table int4, out table_name text,
    out lease_from int8, out lease_until int8)
returns setof record as $$
declare
    q       record;
    v_found boolean;
begin
    begin
        -- One statement, so that its snapshot (xmax) is the one the row was read in. After
        -- waiting for a concurrent update, FOR SHARE returns the row as that update left
        -- it; the xmax is then older than the row, which only shortens the lease.
        select qq.queue_id, qq.queue_cur_table,
               qq.queue_data_pfx || '_' || qq.queue_cur_table::text as tbl,
               pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()) as xmax
          into q
          from pgq.queue qq
         where qq.queue_name = i_queue_name
           and not qq.queue_disable_insert
           and qq.queue_per_tx_limit is null
           for share;
        v_found := found;
        -- Roll the subtransaction back: that releases the row lock (the values stay).
        raise sqlstate 'PGQL0';
    exception
        when sqlstate 'PGQL0' then
            null;
        when serialization_failure then
            return;
    end;
    if v_found then
        queue_id := q.queue_id;
        cur_table := q.queue_cur_table;
        table_name := q.tbl;
        lease_from := q.xmax;
        lease_until := q.xmax + pgq._direct_lease_span();
        return next;
    end if;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Ends every lease granted so far (see above) when an UPDATE of pgq.queue changed a
-- queue's table or insert rules: assigns _direct_lease_span() transaction ids, each to a
-- subtransaction that is rolled back (so the transaction's own list of subtransactions does
-- not grow). Once per statement, after all its rows: an UPDATE of many queues burns one
-- span, not one per queue.
create or replace function pgq._end_direct_leases()
returns trigger as $$
declare
    i int8;
begin
    if not exists (select 1
                     from new_rows n
                     left join old_rows o on o.queue_id = n.queue_id
                    where o.queue_id is null
                       or o.queue_cur_table is distinct from n.queue_cur_table
                       or o.queue_disable_insert is distinct from n.queue_disable_insert
                       or o.queue_per_tx_limit is distinct from n.queue_per_tx_limit)
    then
        return null;
    end if;
    for i in 1 .. pgq._direct_lease_span() loop
        begin
            perform 1 from pgq.direct_lease_burner b for key share;
            raise sqlstate 'PGQL0';
        exception when sqlstate 'PGQL0' then
            null;
        end;
    end loop;
    return null;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

drop trigger if exists queue_direct_leases on pgq.queue;
create trigger queue_direct_leases
    after update on pgq.queue
    referencing old table as old_rows new table as new_rows
    for each statement
    execute function pgq._end_direct_leases();
-- Also in sessions that replay changes (session_replication_role = replica).
alter table pgq.queue enable always trigger queue_direct_leases;
