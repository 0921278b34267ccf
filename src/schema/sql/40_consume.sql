-- libpgq schema, part 4: consuming batches.
--
-- A consumer's position is its last finished tick. next_batch* opens a batch up to a newer
-- tick and remembers it, so a consumer that crashes before finish_batch gets the very same
-- batch again. finish_batch moves the position forward.

-- The tick a merged batch (next_batch_custom with min_count / min_interval) ends at, or
-- NULLs to wait. Takes the newest tick when it reaches a limit without overshooting it more
-- than twice (the usual case for a consumer that keeps up); waits when it reaches none;
-- after a long pause, when the newest tick is far beyond the limits, takes the first tick
-- that reaches one, so a batch stays near the requested size. The reference's choice of
-- tick, under the reference's name and signature.
create or replace function pgq.find_tick_helper(
    in i_queue_id int4,
    in i_prev_tick_id int8,
    in i_prev_tick_time timestamptz,
    in i_prev_tick_seq int8,
    in i_min_count int8,
    in i_min_interval interval,
    out next_tick_id int8,
    out next_tick_time timestamptz,
    out next_tick_seq int8)
as $$
declare
    t          record;
    v_reached  boolean;
    v_overshot boolean;
begin
    select tt.tick_id, tt.tick_time, tt.tick_event_seq into t
      from pgq.tick tt
     where tt.tick_queue = i_queue_id and tt.tick_id > i_prev_tick_id
     order by tt.tick_id desc
     limit 1;
    if not found then
        return;
    end if;
    v_reached := (i_min_count is not null and t.tick_event_seq - i_prev_tick_seq >= i_min_count)
              or (i_min_interval is not null and t.tick_time - i_prev_tick_time >= i_min_interval);
    v_overshot := (i_min_count is not null and t.tick_event_seq - i_prev_tick_seq > i_min_count * 2)
               or (i_min_interval is not null and t.tick_time - i_prev_tick_time > i_min_interval * 2);
    if v_overshot then
        select tt.tick_id, tt.tick_time, tt.tick_event_seq into t
          from pgq.tick tt
         where tt.tick_queue = i_queue_id and tt.tick_id > i_prev_tick_id
           and ((i_min_count is not null and tt.tick_event_seq - i_prev_tick_seq >= i_min_count)
             or (i_min_interval is not null and tt.tick_time - i_prev_tick_time >= i_min_interval))
         order by tt.tick_id
         limit 1;
    elsif not v_reached then
        return;
    end if;
    next_tick_id := t.tick_id;
    next_tick_time := t.tick_time;
    next_tick_seq := t.tick_event_seq;
end;
$$ language plpgsql stable set search_path = pg_catalog, pg_temp;

-- next_batch_custom: open (or re-open) the consumer's next batch. With min_count /
-- min_interval set, several ticks may be merged into one batch, up to a tick with at least
-- min_count events or min_interval of time after the batch start (see find_tick_helper for
-- which). With min_lag set, no batch is opened while its end tick is younger than min_lag.
-- All columns are NULL when there is no batch to process yet.
--
-- _next_batch is the body of next_batch_custom and of finish_and_next_batch: with x_finish set,
-- that batch is finished first. When it is the consumer's open batch, finishing it and
-- opening the next one are one UPDATE of the subscription row (two calls would write the
-- row twice, and neither update can be HOT because sub_batch is indexed); any other batch
-- goes through finish_batch, as a separate call would.
create or replace function pgq._next_batch(
    in x_finish bigint,
    in i_queue_name text,
    in i_consumer_name text,
    in i_min_lag interval,
    in i_min_count int4,
    in i_min_interval interval,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
declare
    s     record;
    prev  record;
    nxt   record;
begin
    select sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_batch, sub.sub_next_tick
      into s
      from pgq.queue q
      join pgq.subscription sub on sub.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name
       for update of sub;
    if not found then
        raise exception 'Not subscriber to queue: %/%',
            coalesce(i_queue_name, 'NULL'),
            coalesce(i_consumer_name, 'NULL');
    end if;
    if x_finish is not null and s.sub_batch is not distinct from x_finish then
        -- Finished in place: the next batch starts at this one's end tick.
        s.sub_last_tick := s.sub_next_tick;
        s.sub_batch := null;
    elsif x_finish is not null then
        -- Not this consumer's open batch: what a separate finish_batch call would do.
        perform pgq.finish_batch(x_finish);
    end if;

    select t.tick_id, t.tick_time, t.tick_event_seq into prev
      from pgq.tick t
     where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick;
    if not found then
        raise exception 'PgQ corruption: Consumer % on queue % does not see tick %',
            i_consumer_name, i_queue_name, s.sub_last_tick;
    end if;

    if s.sub_batch is not null then
        -- An open batch: hand out the same one again.
        select t.tick_id, t.tick_time, t.tick_event_seq into nxt
          from pgq.tick t
         where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick;
        batch_id := s.sub_batch;
    else
        if i_min_count is null and i_min_interval is null then
            select t.tick_id, t.tick_time, t.tick_event_seq into nxt
              from pgq.tick t
             where t.tick_queue = s.sub_queue and t.tick_id > prev.tick_id
             order by t.tick_id
             limit 1;
        else
            select f.next_tick_id as tick_id, f.next_tick_time as tick_time,
                   f.next_tick_seq as tick_event_seq
              into nxt
              from pgq.find_tick_helper(s.sub_queue, prev.tick_id, prev.tick_time,
                                        prev.tick_event_seq, i_min_count, i_min_interval) f;
        end if;
        if nxt.tick_id is null
           or (i_min_lag is not null and nxt.tick_time > pg_catalog.now() - i_min_lag) then
            -- No batch yet (the finished one, if any, is recorded as finished).
            update pgq.subscription sub
               set sub_active = pg_catalog.now(),
                   sub_last_tick = prev.tick_id,
                   sub_batch = null,
                   sub_next_tick = null
             where sub.sub_queue = s.sub_queue and sub.sub_consumer = s.sub_consumer;
            return;
        end if;
        batch_id := pg_catalog.nextval('pgq.batch_id_seq');
    end if;

    update pgq.subscription sub
       set sub_last_tick = prev.tick_id, sub_batch = batch_id, sub_next_tick = nxt.tick_id,
           sub_active = pg_catalog.now()
     where sub.sub_queue = s.sub_queue and sub.sub_consumer = s.sub_consumer;

    cur_tick_id := nxt.tick_id;
    cur_tick_time := nxt.tick_time;
    cur_tick_event_seq := nxt.tick_event_seq;
    prev_tick_id := prev.tick_id;
    prev_tick_time := prev.tick_time;
    prev_tick_event_seq := prev.tick_event_seq;
end;
$$ language plpgsql set search_path = pg_catalog, pg_temp;

create or replace function pgq.next_batch_custom(
    in i_queue_name text,
    in i_consumer_name text,
    in i_min_lag interval,
    in i_min_count int4,
    in i_min_interval interval,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
begin
    -- PL/pgSQL, not SQL: a SQL function would plan this call again on every use.
    select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
           f.cur_tick_event_seq, f.prev_tick_event_seq
      into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
           cur_tick_event_seq, prev_tick_event_seq
      from pgq._next_batch(null, i_queue_name, i_consumer_name,
                           i_min_lag, i_min_count, i_min_interval) f;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- libpgq only (not in the reference): finish_batch(x_batch_id), then next_batch_info, in
-- one call and, when x_batch_id is the consumer's open batch, one write of its
-- subscription row. For a consumer that goes on at once.
create or replace function pgq.finish_and_next_batch(
    in x_batch_id bigint,
    in i_queue_name text,
    in i_consumer_name text,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
begin
    select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
           f.cur_tick_event_seq, f.prev_tick_event_seq
      into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
           cur_tick_event_seq, prev_tick_event_seq
      from pgq._next_batch(x_batch_id, i_queue_name, i_consumer_name, null, null, null) f;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.next_batch_info(
    in i_queue_name text,
    in i_consumer_name text,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
begin
    select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
           f.cur_tick_event_seq, f.prev_tick_event_seq
      into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
           cur_tick_event_seq, prev_tick_event_seq
      from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null) f;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.next_batch(
    in i_queue_name text,
    in i_consumer_name text)
returns int8 as $$
begin
    return (select f.batch_id
              from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null) f);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- All events of a batch, ordered by ev_id. For large batches prefer get_batch_cursor.
create or replace function pgq.get_batch_events(
    in x_batch_id   bigint,
    out ev_id       bigint,
    out ev_time     timestamptz,
    out ev_txid     bigint,
    out ev_retry    int4,
    out ev_type     text,
    out ev_data     text,
    out ev_extra1   text,
    out ev_extra2   text,
    out ev_extra3   text,
    out ev_extra4   text)
returns setof record as $$
begin
    return query execute pgq.batch_event_sql(x_batch_id);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Declare a cursor over a batch's events (optionally filtered by a caller-supplied WHERE
-- condition on the event columns), return its first i_quick_limit rows; the caller
-- FETCHes the rest in the same transaction.
create or replace function pgq.get_batch_cursor(
    in i_batch_id       bigint,
    in i_cursor_name    text,
    in i_quick_limit    int4,
    in i_extra_where    text,
    out ev_id       bigint,
    out ev_time     timestamptz,
    out ev_txid     bigint,
    out ev_retry    int4,
    out ev_type     text,
    out ev_data     text,
    out ev_extra1   text,
    out ev_extra2   text,
    out ev_extra3   text,
    out ev_extra4   text)
returns setof record as $$
declare
    v_sql text;
begin
    -- Missing arguments: no cursor and no rows, as in the reference.
    if i_batch_id is null or i_cursor_name is null or i_quick_limit is null then
        return;
    end if;
    v_sql := pgq.batch_event_sql(i_batch_id);
    if i_extra_where is not null and pg_catalog.btrim(i_extra_where) <> '' then
        -- The filter is the caller's own SQL by design (the reference API takes it too).
        -- That is why this function is SECURITY INVOKER and keeps the caller's
        -- search_path: the filter runs with the caller's rights and resolves names as the
        -- caller would, never as the schema owner. The caller reads the event tables
        -- itself, which pgq_reader may.
        v_sql := 'select * from (' || v_sql || ') ev where (' || i_extra_where || ') order by 1';
    end if;
    execute 'declare ' || pg_catalog.quote_ident(i_cursor_name) || ' no scroll cursor for ' || v_sql;
    if i_quick_limit > 0 then
        return query execute 'fetch forward ' || i_quick_limit::text
                          || ' from ' || pg_catalog.quote_ident(i_cursor_name);
    end if;
end;
$$ language plpgsql;

create or replace function pgq.get_batch_cursor(
    in i_batch_id       bigint,
    in i_cursor_name    text,
    in i_quick_limit    int4,
    out ev_id       bigint,
    out ev_time     timestamptz,
    out ev_txid     bigint,
    out ev_retry    int4,
    out ev_type     text,
    out ev_data     text,
    out ev_extra1   text,
    out ev_extra2   text,
    out ev_extra3   text,
    out ev_extra4   text)
returns setof record as $$
begin
    return query select * from pgq.get_batch_cursor(i_batch_id, i_cursor_name, i_quick_limit, null);
end;
-- SECURITY INVOKER like the 4-argument form it calls.
$$ language plpgsql strict set search_path = pg_catalog, pg_temp;

-- libpgq only (revision 7). Declares i_cursor_name over the events of the batch that
-- follows the consumer's open batch, before that one is finished: the events after tick
-- i_after_tick (where the open batch ends) up to the next tick, which is the batch
-- next_batch will then return. Returns that tick, or NULL (and declares nothing) when there
-- is none yet, the consumer is already past i_after_tick, the transaction is not READ
-- COMMITTED, or an argument is NULL. Since revision 8 the cursor has every column of the
-- event table (ev_owner too, see _event_select), not only batch_event_sql's ten.
--
-- A client runs it on a second connection while it still handles the open batch, so that
-- the server reads and sorts the next batch meanwhile; once next_batch returned the batch
-- (i_after_tick, result], the client reads it from this cursor and finishes it in this
-- transaction. That is sound because a tick range's events are fixed once its end tick
-- exists (their transactions committed before it), and no rotation can remove them while
-- the consumer has not passed them. READ COMMITTED, because the transaction must see the
-- other connection's commit of the open batch's finish.
create or replace function pgq.look_ahead_cursor(
    i_queue_name text, i_consumer_name text, i_after_tick bigint, i_cursor_name text)
returns bigint as $$
declare
    b record;
begin
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        return null;
    end if;
    select s.sub_id, pt.tick_snapshot as prev_snap, ct.tick_id, ct.tick_snapshot as cur_snap,
           pgq._batch_tables(q.queue_data_pfx, q.queue_ntables, q.queue_cur_table,
                             q.queue_switch_step1, q.queue_switch_step2,
                             pt.tick_snapshot, ct.tick_snapshot) as tables,
           (select pg_catalog.string_agg(x::text, ',' order by x)
              from txid_snapshot_xip(pt.tick_snapshot) x
             where txid_visible_in_snapshot(x, ct.tick_snapshot)) as xip
      into b
      from pgq.queue q
      join pgq.consumer c on c.co_name = i_consumer_name
      join pgq.subscription s on s.sub_queue = q.queue_id and s.sub_consumer = c.co_id
      join pgq.tick pt on pt.tick_queue = q.queue_id and pt.tick_id = i_after_tick
      cross join lateral (
          select t.tick_id, t.tick_snapshot
            from pgq.tick t
           where t.tick_queue = q.queue_id and t.tick_id > i_after_tick
           order by t.tick_id
           limit 1) ct
     where q.queue_name = i_queue_name
       -- Not past the range: the open batch ends at i_after_tick, or was finished there
       -- already (by the other connection, since this began).
       and s.sub_last_tick <= i_after_tick;
    if not found then
        return null;
    end if;
    -- Every column of the event table, in table order (ev_owner too; see _event_select).
    execute 'declare ' || pg_catalog.quote_ident(i_cursor_name) || ' no scroll cursor for '
         || pgq._event_select('ev_id, ev_time, ev_txid, ev_owner, ev_retry, ev_type, ev_data, '
                              'ev_extra1, ev_extra2, ev_extra3, ev_extra4',
                              b.sub_id, b.prev_snap, b.cur_snap, b.tables, b.xip);
    return b.tick_id;
end;
-- SECURITY INVOKER like get_batch_cursor: the caller reads the event tables itself. STRICT:
-- a NULL argument declares nothing.
$$ language plpgsql strict set search_path = pg_catalog, pg_temp;

-- Put one event of a batch into the consumer's retry queue, to come back to this consumer
-- only, at i_retry_time, with ev_retry counting the attempt. Returns 1, or 0 when the
-- event is already queued for retry.
create or replace function pgq.event_retry(
    x_batch_id bigint,
    x_event_id bigint,
    x_retry_time timestamptz)
returns integer as $$
begin
    -- The rules are event_retry_many's for one event (defined below; resolved at call time).
    return pgq.event_retry_many(x_batch_id, array[x_event_id], array[x_retry_time]);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.event_retry(
    x_batch_id bigint,
    x_event_id bigint,
    x_retry_seconds integer)
returns integer as $$
begin
    return pgq.event_retry(x_batch_id, x_event_id,
                           pg_catalog.now() + pg_catalog.make_interval(secs => x_retry_seconds));
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- libpgq only (not in the reference): event_retry for many events of one batch at once,
-- x_retry_times[i] for x_event_ids[i]. The batch's events are read once, where one
-- event_retry call each reads them once per event (a batch sent back whole in a downstream
-- outage would cost time quadratic in its size). Same rules as event_retry: an id given
-- twice is queued once (at its first time), one already queued is skipped, and an id
-- neither in the batch nor queued fails the whole call with 'event not found'. Returns how
-- many were queued.
create or replace function pgq.event_retry_many(
    x_batch_id bigint,
    x_event_ids bigint[],
    x_retry_times timestamptz[])
returns integer as $$
declare
    s     record;
    v_cnt integer;
begin
    if pg_catalog.cardinality(x_event_ids) <> pg_catalog.cardinality(x_retry_times) then
        raise exception 'event_retry_many: % event ids but % retry times',
            pg_catalog.cardinality(x_event_ids), pg_catalog.cardinality(x_retry_times);
    end if;
    select sub.sub_id, sub.sub_queue into s
      from pgq.subscription sub
     where sub.sub_batch = x_batch_id;
    if not found then
        raise exception 'event not found';
    end if;

    execute 'insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid,'
         || ' ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' select t.at, $1, b.ev_id, b.ev_time, null, $2, coalesce(b.ev_retry, 0) + 1,'
         || ' b.ev_type, b.ev_data, b.ev_extra1, b.ev_extra2, b.ev_extra3, b.ev_extra4'
         || ' from (' || pgq.batch_event_sql(x_batch_id) || ') b'
         || ' join (select distinct on (u.id) u.id, u.at'
         || '         from unnest($3, $4) with ordinality as u(id, at, n)'
         || '        order by u.id, u.n) t on t.id = b.ev_id'
         || ' on conflict (ev_owner, ev_id) do nothing'
        using s.sub_queue, s.sub_id, x_event_ids, x_retry_times;
    get diagnostics v_cnt = row_count;
    -- Every id that was in the batch is queued now (by this call or before it).
    if exists (select 1 from pg_catalog.unnest(x_event_ids) i(id)
                where i.id is null
                   or not exists (select 1 from pgq.retry_queue r
                                   where r.ev_owner = s.sub_id and r.ev_id = i.id)) then
        raise exception 'event not found';
    end if;
    return v_cnt;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Put every event of a batch into the retry queue. Returns how many were queued.
create or replace function pgq.batch_retry(
    i_batch_id bigint,
    i_retry_seconds integer)
returns integer as $$
declare
    s     record;
    v_cnt integer;
begin
    select sub.sub_id, sub.sub_queue into s
      from pgq.subscription sub
     where sub.sub_batch = i_batch_id;
    if not found then
        raise exception 'batch_retry: batch % not found', i_batch_id;
    end if;
    execute 'insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid,'
         || ' ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' select $1, $2, b.ev_id, b.ev_time, null, $3, coalesce(b.ev_retry, 0) + 1,'
         || ' b.ev_type, b.ev_data, b.ev_extra1, b.ev_extra2, b.ev_extra3, b.ev_extra4'
         || ' from (' || pgq.batch_event_sql(i_batch_id) || ') b'
         || ' on conflict (ev_owner, ev_id) do nothing'
        using pg_catalog.now() + pg_catalog.make_interval(secs => i_retry_seconds),
              s.sub_queue, s.sub_id;
    get diagnostics v_cnt = row_count;
    return v_cnt;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Queue an event for retry by a consumer directly, without a batch (used by tools that
-- move events between queues). Returns the event id.
create or replace function pgq.event_retry_raw(
    x_queue text,
    x_consumer text,
    x_retry_after timestamptz,
    x_ev_id bigint,
    x_ev_time timestamptz,
    x_ev_retry integer,
    x_ev_type text,
    x_ev_data text,
    x_ev_extra1 text,
    x_ev_extra2 text,
    x_ev_extra3 text,
    x_ev_extra4 text)
returns bigint as $$
declare
    s     record;
    v_id  bigint := x_ev_id;
begin
    select sub.sub_id, sub.sub_queue, q.queue_event_seq into s
      from pgq.queue q
      join pgq.subscription sub on sub.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = x_queue and c.co_name = x_consumer;
    if not found then
        raise exception 'consumer not registered';
    end if;
    if v_id is null then
        v_id := pg_catalog.nextval(s.queue_event_seq::regclass);
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid,
        ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    values (x_retry_after, s.sub_queue, v_id, x_ev_time,
        null, s.sub_id, x_ev_retry, x_ev_type, x_ev_data,
        x_ev_extra1, x_ev_extra2, x_ev_extra3, x_ev_extra4);
    return v_id;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Close a batch: the consumer's position moves to the batch's end tick. Returns 1, or 0
-- with a WARNING when no such batch is open.
create or replace function pgq.finish_batch(
    x_batch_id bigint)
returns integer as $$
begin
    update pgq.subscription sub
       set sub_active = pg_catalog.now(),
           sub_last_tick = sub.sub_next_tick,
           sub_next_tick = null,
           sub_batch = null
     where sub.sub_batch = x_batch_id;
    if not found then
        raise warning 'finish_batch: batch % not found', x_batch_id;
        return 0;
    end if;
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;
