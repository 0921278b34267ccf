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
