-- libpgq schema, part 7: cooperative consumers (the pgq_coop API of SkyTools 3.x).
--
-- Several sub-consumers share one consumer's event stream: every batch goes to exactly one
-- of them. This part uses only what the official pgq extension has too (its public
-- functions pgq.register_consumer / pgq.next_batch_custom and the pgq.queue, pgq.consumer,
-- pgq.subscription and pgq.tick tables), so the installer also puts it on top of the
-- official extension.
--
-- Model (the one pgq itself knows about, see pgq.unregister_consumer):
--   * the main consumer C has its ordinary subscription row; its sub_last_tick is the
--     position of the shared stream and it never keeps a batch open between transactions;
--   * sub-consumer S of C is the consumer named 'C.S', subscribed with C's sub_id, so
--     events retried by any sub-consumer come back into the shared stream;
--   * an idle sub-consumer row has sub_last_tick and sub_next_tick NULL (so it never holds
--     back rotation); while it owns a batch it has sub_batch, sub_last_tick and
--     sub_next_tick set, exactly like an ordinary consumer with an open batch, so the pgq
--     batch functions (get_batch_events, event_retry, ...) work on it unchanged.
--
-- next_batch locks C's row first, then S's row, so calls for one consumer are serialised
-- and every batch is handed to one sub-consumer only. Other sub-consumers' rows are only
-- ever locked with SKIP LOCKED, so the functions cannot deadlock each other.

set local client_min_messages = warning;

create schema if not exists pgq_coop;

-- Batches whose sub-consumer unregistered with batch_handling = 1. The batch stays in the
-- sub-consumer's subscription row (pgq finds a batch's events through that row) until
-- another sub-consumer of the same consumer takes it over. Batch ids are never reused, so
-- an entry whose batch is gone (finished, or its consumer unregistered) is inert.
create table if not exists pgq_coop.released_batch (
    batch_id     bigint primary key,
    released_at  timestamptz not null default now()
);

-- Internal: 'Invalid NULL value' unless every argument is set.
create or replace function pgq_coop._check_args(variadic i_args text[])
returns void as $$
begin
    if pg_catalog.array_position(i_args, null) is not null then
        raise exception 'Invalid NULL value';
    end if;
end;
$$ language plpgsql immutable set search_path = pg_catalog, pg_temp;

-- Internal: a consumer name no subscription uses any more is forgotten, as pgq does.
create or replace function pgq_coop._forget_name(i_co_id integer)
returns void as $$
begin
    delete from pgq.consumer c
     where c.co_id = i_co_id
       and not exists (select 1 from pgq.subscription s where s.sub_consumer = c.co_id);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Register sub-consumer i_subconsumer_name of consumer i_consumer_name on a queue,
-- registering the consumer itself first when needed. Returns 1 when registered now, 0 when
-- it already was. A sub-consumer that unregistered while leaving its batch to the others
-- gets that batch back if nobody took it yet.
create or replace function pgq_coop.register_subconsumer(
    i_queue_name text,
    i_consumer_name text,
    i_subconsumer_name text)
returns integer as $$
declare
    v_main   record;
    v_name   text;
    v_co_id  integer;
    v_sub    record;
    v_try    integer;
begin
    perform pgq_coop._check_args(i_queue_name, i_consumer_name, i_subconsumer_name);
    if pg_catalog.btrim(i_subconsumer_name) = '' then
        raise exception 'Invalid subconsumer name: must not be empty'
            using errcode = 'invalid_parameter_value';
    end if;

    -- The consumer's row first, as next_batch does. pgq.register_consumer only when the
    -- consumer is not registered yet: it locks the consumer's name row, and taking that
    -- before the subscription row could deadlock with a sibling's next_batch.
    for v_try in 1 .. 2 loop
        select s.sub_id, s.sub_queue into v_main
          from pgq.queue q
          join pgq.subscription s on s.sub_queue = q.queue_id
          join pgq.consumer c on c.co_id = s.sub_consumer
         where q.queue_name = i_queue_name and c.co_name = i_consumer_name
           for update of s;
        exit when found or v_try = 2;
        -- Raises for an unknown queue.
        perform pgq.register_consumer(i_queue_name, i_consumer_name);
    end loop;
    if v_main.sub_id is null then
        raise exception 'Not subscriber to queue: %/%', i_queue_name, i_consumer_name;
    end if;
    if exists (select 1
                 from pgq.subscription m
                 join pgq.consumer mc on mc.co_id = m.sub_consumer
                where m.sub_queue = v_main.sub_queue and m.sub_id = v_main.sub_id
                  and mc.co_name <> i_consumer_name
                  and pg_catalog.starts_with(i_consumer_name, mc.co_name || '.')) then
        raise exception 'Cannot register subconsumer %/%.%: % is itself a subconsumer',
            i_queue_name, i_consumer_name, i_subconsumer_name, i_consumer_name
            using errcode = 'invalid_parameter_value';
    end if;

    v_name := i_consumer_name || '.' || i_subconsumer_name;
    -- Names no subscription uses are deleted by unregistering; the key-share lock keeps
    -- this one until our row references it, the loop takes it again if it just went.
    loop
        insert into pgq.consumer (co_name) values (v_name) on conflict (co_name) do nothing;
        select c.co_id into v_co_id from pgq.consumer c where c.co_name = v_name for key share;
        exit when found;
    end loop;

    select s.sub_id, s.sub_batch,
           exists (select 1 from pgq_coop.released_batch r where r.batch_id = s.sub_batch)
             as released
      into v_sub
      from pgq.subscription s
     where s.sub_queue = v_main.sub_queue and s.sub_consumer = v_co_id
       for update;
    if found then
        if v_sub.sub_id <> v_main.sub_id then
            raise exception 'Cannot register subconsumer %/%: consumer name % is already used by another consumer',
                i_queue_name, v_name, v_name
                using errcode = 'invalid_parameter_value';
        end if;
        if v_sub.released then
            delete from pgq_coop.released_batch r where r.batch_id = v_sub.sub_batch;
            update pgq.subscription s
               set sub_active = pg_catalog.now()
             where s.sub_queue = v_main.sub_queue and s.sub_consumer = v_co_id;
            return 1;
        end if;
        return 0;
    end if;

    insert into pgq.subscription (sub_id, sub_queue, sub_consumer, sub_last_tick, sub_next_tick, sub_batch)
    values (v_main.sub_id, v_main.sub_queue, v_co_id, null, null, null);
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Unregister a sub-consumer. When it has an open batch, i_batch_handling decides:
-- 0 raises an error, 1 releases the batch, and the next next_batch call of another
-- sub-consumer of the same consumer takes it over (no event is lost). Returns 1 when
-- unregistered, 0 when no such sub-consumer was registered.
create or replace function pgq_coop.unregister_subconsumer(
    i_queue_name text,
    i_consumer_name text,
    i_subconsumer_name text,
    i_batch_handling integer)
returns integer as $$
declare
    v_main record;
    v_sub  record;
begin
    perform pgq_coop._check_args(i_queue_name, i_consumer_name, i_subconsumer_name,
                                 i_batch_handling::text);
    if i_batch_handling not in (0, 1) then
        raise exception 'Invalid batch_handling %: must be 0 (fail on an open batch) or 1 (release it)',
            i_batch_handling
            using errcode = 'invalid_parameter_value';
    end if;

    -- Same lock order as next_batch and register_subconsumer: the consumer's row first.
    select m.sub_queue, m.sub_id into v_main
      from pgq.queue q
      join pgq.subscription m on m.sub_queue = q.queue_id
      join pgq.consumer mc on mc.co_id = m.sub_consumer
     where q.queue_name = i_queue_name and mc.co_name = i_consumer_name
       for update of m;
    if not found then
        return 0;
    end if;

    select s.sub_queue, s.sub_consumer, s.sub_batch,
           exists (select 1 from pgq_coop.released_batch r where r.batch_id = s.sub_batch)
             as released
      into v_sub
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_main.sub_queue and s.sub_id = v_main.sub_id
       and c.co_name = i_consumer_name || '.' || i_subconsumer_name
       for update of s;
    if not found or v_sub.released then
        return 0;
    end if;

    if v_sub.sub_batch is not null then
        if i_batch_handling = 0 then
            raise exception 'Subconsumer has an open batch: %/%.% holds batch %',
                i_queue_name, i_consumer_name, i_subconsumer_name, v_sub.sub_batch
                using hint = 'finish the batch first, or unregister with batch_handling 1 to hand it to another subconsumer';
        end if;
        insert into pgq_coop.released_batch (batch_id) values (v_sub.sub_batch)
            on conflict (batch_id) do nothing;
        return 1;
    end if;

    delete from pgq.subscription s
     where s.sub_queue = v_sub.sub_queue and s.sub_consumer = v_sub.sub_consumer;
    perform pgq_coop._forget_name(v_sub.sub_consumer);
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- The heart of the API: the sub-consumer's next batch. In order of preference:
--   1. the batch the sub-consumer already has open (it crashed, or asks again);
--   2. a batch released by an unregistered sub-consumer of the same consumer;
--   3. with i_dead_interval set, the open batch of a sibling not seen for longer than
--      that (it is considered dead; its row keeps no batch afterwards);
--   4. a new batch of the shared stream, opened for the main consumer with
--      pgq.next_batch_custom (so min_lag / min_count / min_interval apply) and moved to
--      the sub-consumer at once; the main consumer's position moves past it.
-- All columns are NULL when there is nothing to do yet.
create or replace function pgq_coop.next_batch_custom(
    in i_queue_name text,
    in i_consumer_name text,
    in i_subconsumer_name text,
    in i_min_lag interval,
    in i_min_count int4,
    in i_min_interval interval,
    in i_dead_interval interval,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
declare
    v_queue  integer;
    v_main   record;
    v_sub    record;
    v_other  record;
    v_new    record;
begin
    perform pgq_coop._check_args(i_queue_name, i_consumer_name, i_subconsumer_name);

    select q.queue_id into v_queue from pgq.queue q where q.queue_name = i_queue_name;
    if not found then
        raise exception 'No such event queue: %', i_queue_name;
    end if;

    -- Lock order: main consumer row, then own row, then others with SKIP LOCKED only.
    select s.sub_id, s.sub_consumer into v_main
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_queue and c.co_name = i_consumer_name
       for update of s;
    if not found then
        raise exception 'Not subscriber to queue: %/%', i_queue_name, i_consumer_name;
    end if;

    select s.sub_consumer, s.sub_batch, s.sub_last_tick, s.sub_next_tick into v_sub
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_queue and s.sub_id = v_main.sub_id
       and s.sub_consumer <> v_main.sub_consumer
       and c.co_name = i_consumer_name || '.' || i_subconsumer_name
       and not exists (select 1 from pgq_coop.released_batch r where r.batch_id = s.sub_batch)
       for update of s;
    if not found then
        raise exception 'Not subscriber to queue: %/% (subconsumer % is not registered)',
            i_queue_name, i_consumer_name, i_subconsumer_name;
    end if;

    if v_sub.sub_batch is null then
        -- A released batch first, then (when asked to) a dead sibling's batch.
        select s.sub_consumer, s.sub_batch, s.sub_last_tick, s.sub_next_tick,
               r.batch_id is not null as released
          into v_other
          from pgq.subscription s
          left join pgq_coop.released_batch r on r.batch_id = s.sub_batch
         where s.sub_queue = v_queue and s.sub_id = v_main.sub_id
           and s.sub_consumer not in (v_main.sub_consumer, v_sub.sub_consumer)
           and s.sub_batch is not null
           and (r.batch_id is not null
                or (i_dead_interval is not null
                    and s.sub_active < pg_catalog.now() - i_dead_interval))
         order by r.batch_id is null, s.sub_batch
         limit 1
           for update of s skip locked;
        if found then
            if v_other.released then
                delete from pgq.subscription s
                 where s.sub_queue = v_queue and s.sub_consumer = v_other.sub_consumer;
                delete from pgq_coop.released_batch r where r.batch_id = v_other.sub_batch;
                perform pgq_coop._forget_name(v_other.sub_consumer);
            else
                update pgq.subscription s
                   set sub_batch = null, sub_last_tick = null, sub_next_tick = null
                 where s.sub_queue = v_queue and s.sub_consumer = v_other.sub_consumer;
            end if;
            v_sub.sub_batch := v_other.sub_batch;
            v_sub.sub_last_tick := v_other.sub_last_tick;
            v_sub.sub_next_tick := v_other.sub_next_tick;
        else
            select f.batch_id, f.cur_tick_id, f.prev_tick_id into v_new
              from pgq.next_batch_custom(i_queue_name, i_consumer_name,
                                         i_min_lag, i_min_count, i_min_interval) f;
            if v_new.batch_id is null then
                update pgq.subscription s
                   set sub_active = pg_catalog.now()
                 where s.sub_queue = v_queue and s.sub_consumer = v_sub.sub_consumer;
                return;
            end if;
            -- The main consumer closes the batch at once (its position is the shared
            -- stream's); the sub-consumer owns it from now on.
            update pgq.subscription s
               set sub_batch = null, sub_last_tick = v_new.cur_tick_id, sub_next_tick = null,
                   sub_active = pg_catalog.now()
             where s.sub_queue = v_queue and s.sub_consumer = v_main.sub_consumer;
            v_sub.sub_batch := v_new.batch_id;
            v_sub.sub_last_tick := v_new.prev_tick_id;
            v_sub.sub_next_tick := v_new.cur_tick_id;
        end if;
    end if;

    -- Seen now: a sibling's dead_interval counts from here.
    update pgq.subscription s
       set sub_batch = v_sub.sub_batch, sub_last_tick = v_sub.sub_last_tick,
           sub_next_tick = v_sub.sub_next_tick, sub_active = pg_catalog.now()
     where s.sub_queue = v_queue and s.sub_consumer = v_sub.sub_consumer;

    batch_id := v_sub.sub_batch;
    select t.tick_id, t.tick_time, t.tick_event_seq
      into cur_tick_id, cur_tick_time, cur_tick_event_seq
      from pgq.tick t
     where t.tick_queue = v_queue and t.tick_id = v_sub.sub_next_tick;
    select t.tick_id, t.tick_time, t.tick_event_seq
      into prev_tick_id, prev_tick_time, prev_tick_event_seq
      from pgq.tick t
     where t.tick_queue = v_queue and t.tick_id = v_sub.sub_last_tick;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq_coop.next_batch_custom(
    in i_queue_name text,
    in i_consumer_name text,
    in i_subconsumer_name text,
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
    select * from pgq_coop.next_batch_custom(i_queue_name, i_consumer_name, i_subconsumer_name,
                                             i_min_lag, i_min_count, i_min_interval, null);
$$ language sql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq_coop.next_batch_info(
    in i_queue_name text,
    in i_consumer_name text,
    in i_subconsumer_name text,
    in i_dead_interval interval,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
    select * from pgq_coop.next_batch_custom(i_queue_name, i_consumer_name, i_subconsumer_name,
                                             null, null, null, i_dead_interval);
$$ language sql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq_coop.next_batch_info(
    in i_queue_name text,
    in i_consumer_name text,
    in i_subconsumer_name text,
    out batch_id int8,
    out cur_tick_id int8,
    out prev_tick_id int8,
    out cur_tick_time timestamptz,
    out prev_tick_time timestamptz,
    out cur_tick_event_seq int8,
    out prev_tick_event_seq int8)
as $$
    select * from pgq_coop.next_batch_custom(i_queue_name, i_consumer_name, i_subconsumer_name,
                                             null, null, null, null);
$$ language sql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq_coop.next_batch(
    i_queue_name text,
    i_consumer_name text,
    i_subconsumer_name text,
    i_dead_interval interval)
returns int8 as $$
    select f.batch_id
      from pgq_coop.next_batch_custom(i_queue_name, i_consumer_name, i_subconsumer_name,
                                      null, null, null, i_dead_interval) f;
$$ language sql security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq_coop.next_batch(
    i_queue_name text,
    i_consumer_name text,
    i_subconsumer_name text)
returns int8 as $$
    select f.batch_id
      from pgq_coop.next_batch_custom(i_queue_name, i_consumer_name, i_subconsumer_name,
                                      null, null, null, null) f;
$$ language sql security definer set search_path = pg_catalog, pg_temp;

-- Close a sub-consumer's batch. The shared position moved when the batch was handed out,
-- so only the sub-consumer's row changes: it becomes idle (or goes away, when the
-- sub-consumer had unregistered and released the batch). Returns 1, or 0 with a WARNING
-- when no such batch is open.
create or replace function pgq_coop.finish_batch(
    i_batch_id bigint)
returns integer as $$
declare
    v_co_id integer;
begin
    delete from pgq_coop.released_batch r where r.batch_id = i_batch_id;
    if found then
        delete from pgq.subscription s where s.sub_batch = i_batch_id
        returning s.sub_consumer into v_co_id;
        if v_co_id is not null then
            perform pgq_coop._forget_name(v_co_id);
            return 1;
        end if;
    else
        update pgq.subscription s
           set sub_active = pg_catalog.now(),
               sub_last_tick = null,
               sub_next_tick = null,
               sub_batch = null
         where s.sub_batch = i_batch_id;
        if found then
            return 1;
        end if;
    end if;
    raise warning 'coop_finish_batch: batch % not found', i_batch_id;
    return 0;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Privileges: the same roles as pgq's consuming functions (pgq_reader, and pgq_admin).
grant usage on schema pgq_coop to public;
do $coop_grants$
declare
    f       record;
    v_role  text;
begin
    for f in
        select p.oid::regprocedure::text as sig, p.proname
          from pg_catalog.pg_proc p
         where p.pronamespace = 'pgq_coop'::regnamespace
    loop
        execute 'revoke all on function ' || f.sig || ' from public';
        if f.proname like '\_%' then
            continue;
        end if;
        for v_role in
            select r from unnest(array['pgq_reader', 'pgq_admin']) r
             where exists (select 1 from pg_catalog.pg_roles where rolname = r)
        loop
            execute 'grant execute on function ' || f.sig || ' to ' || v_role;
        end loop;
    end loop;
end
$coop_grants$;
