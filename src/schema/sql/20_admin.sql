-- libpgq schema, part 2: queue and consumer administration.

-- Create a queue with its event tables and sequences, and make its first tick so that
-- consumers registering right away have a position. Returns 1, or 0 if it existed.
create or replace function pgq.create_queue(i_queue_name text)
returns integer as $$
declare
    v_id      int4;
    v_pfx     text;
    v_evseq   text;
    v_tickseq text;
    v_n       int4;
    v_ntables int4;
begin
    perform pgq._check_name('queue', i_queue_name);

    -- Serialise concurrent create_queue calls for the same name.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgq.create_queue'),
                                             pg_catalog.hashtext(i_queue_name));
    if exists (select 1 from pgq.queue q where q.queue_name = i_queue_name) then
        return 0;
    end if;

    -- Object names come from the numeric id only: the queue's name never reaches SQL text.
    v_id := pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('pgq.queue', 'queue_id'));
    v_pfx := 'pgq.event_' || v_id::text;
    v_evseq := v_pfx || '_id_seq';
    v_tickseq := v_pfx || '_tick_seq';

    execute 'create sequence ' || v_evseq;
    execute 'create sequence ' || v_tickseq;

    insert into pgq.queue (queue_id, queue_name, queue_data_pfx, queue_event_seq, queue_tick_seq)
    values (v_id, i_queue_name, v_pfx, v_evseq, v_tickseq)
    returning queue_ntables into v_ntables;

    -- The parent lets tools read all of a queue's events at once; inserts go to children.
    execute 'create table ' || v_pfx || ' () inherits (pgq.event_template)';
    execute 'alter table ' || v_pfx
         || ' alter column ev_id set default nextval(' || pg_catalog.quote_literal(v_evseq) || '::regclass),'
         || ' alter column ev_time set default now()';
    for v_n in 0 .. v_ntables - 1 loop
        -- Children inherit the parent's defaults; the ev_txid index is what batch reads use.
        execute 'create table ' || v_pfx || '_' || v_n::text || ' () inherits (' || v_pfx || ')';
        execute 'create index event_' || v_id::text || '_' || v_n::text || '_txid_idx on '
             || v_pfx || '_' || v_n::text || ' (ev_txid)';
    end loop;

    perform pgq.grant_perms(i_queue_name);
    perform pgq.tune_storage(i_queue_name);

    insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
    values (v_id, pg_catalog.nextval(v_tickseq::regclass), pgq.seq_getval(v_evseq));

    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Drop a queue with its events and ticks. Without force, refuses while consumers are
-- registered; with force, unregisters them first.
create or replace function pgq.drop_queue(x_queue_name text, x_force bool)
returns integer as $$
declare
    q    record;
    v_n  int4;
begin
    select qq.queue_id, qq.queue_data_pfx, qq.queue_ntables, qq.queue_event_seq, qq.queue_tick_seq
      into q
      from pgq.queue qq
     where qq.queue_name = x_queue_name
       for update;
    if not found then
        raise exception 'No such event queue';
    end if;

    if exists (select 1 from pgq.subscription s where s.sub_queue = q.queue_id) then
        if not coalesce(x_force, false) then
            raise exception 'cannot drop queue, consumers still attached';
        end if;
        perform pgq.unregister_consumer(x_queue_name, c.co_name)
           from pgq.subscription s
           join pgq.consumer c on c.co_id = s.sub_consumer
          where s.sub_queue = q.queue_id;
    end if;

    delete from pgq.retry_queue r where r.ev_queue = q.queue_id;
    delete from pgq.tick t where t.tick_queue = q.queue_id;
    for v_n in 0 .. q.queue_ntables - 1 loop
        execute 'drop table if exists ' || q.queue_data_pfx || '_' || v_n::text;
    end loop;
    execute 'drop table if exists ' || q.queue_data_pfx;
    delete from pgq.queue qq where qq.queue_id = q.queue_id;
    execute 'drop sequence if exists ' || q.queue_tick_seq;
    execute 'drop sequence if exists ' || q.queue_event_seq;
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- STRICT: a NULL name gives NULL, not an error, as in the reference.
create or replace function pgq.drop_queue(x_queue_name text)
returns integer as $$
begin
    return pgq.drop_queue(x_queue_name, false);
end;
$$ language plpgsql strict security definer set search_path = pg_catalog, pg_temp;

-- Change one queue setting; the parameter is named without its column's "queue_" prefix.
create or replace function pgq.set_queue_config(
    x_queue_name    text,
    x_param_name    text,
    x_param_value   text)
returns integer as $$
declare
    v_param text := x_param_name;
begin
    if x_queue_name is null or x_param_name is null then
        raise exception 'Invalid NULL value';
    end if;
    if not exists (select 1 from pgq.queue q where q.queue_name = x_queue_name) then
        raise exception 'No such event queue';
    end if;
    -- Names are given without the column's queue_ prefix, as the reference takes them:
    -- 'queue_ticker_max_count' is not a parameter.
    if v_param not in ('ticker_max_count', 'ticker_max_lag',
            'ticker_idle_period', 'ticker_paused', 'rotation_period', 'external_ticker') then
        -- The reference's message has a stray "s" after the name; tools may match it.
        raise exception 'cannot change parameter "%"', x_param_name || 's';
    end if;
    -- The literal is coerced to the column's type, so bad values fail with the type's error.
    execute pg_catalog.format('update pgq.queue set %I = %L where queue_name = %L',
                              'queue_' || v_param, x_param_value, x_queue_name);
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Subscribe a consumer at the queue's newest tick. Returns 1 new, 0 already registered.
create or replace function pgq.register_consumer(
    x_queue_name text,
    x_consumer_id text)
returns integer as $$
begin
    return pgq.register_consumer_at(x_queue_name, x_consumer_id, null);
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Subscribe a consumer at a given tick, or move an existing subscription there (dropping
-- its open batch). A NULL tick means the newest tick and leaves an existing
-- subscription alone. Returns 1 when a subscription was created, else 0.
create or replace function pgq.register_consumer_at(
    x_queue_name text,
    x_consumer_name text,
    x_tick_pos bigint)
returns integer as $$
declare
    v_queue     int4;
    v_consumer  int4;
    v_tick      bigint;
begin
    select q.queue_id into v_queue from pgq.queue q where q.queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not created yet';
    end if;
    -- A NULL name fails on pgq.consumer's NOT NULL below, with the reference's message.
    if x_consumer_name is not null then
        perform pgq._check_name('consumer', x_consumer_name);
    end if;

    if x_tick_pos is null then
        select max(t.tick_id) into v_tick from pgq.tick t where t.tick_queue = v_queue;
        if v_tick is null then
            raise exception 'No ticks for this queue.  Please run ticker on database.';
        end if;
    else
        perform 1 from pgq.tick t where t.tick_queue = v_queue and t.tick_id = x_tick_pos;
        if not found then
            raise exception 'cannot reposition, tick not found: %', x_tick_pos;
        end if;
        v_tick := x_tick_pos;
    end if;

    -- unregister_consumer deletes names no queue uses any more; the key-share lock keeps
    -- this one alive until our subscription row references it, and the loop takes the name
    -- again if a concurrent unregister removed it just before.
    loop
        insert into pgq.consumer (co_name) values (x_consumer_name)
            on conflict (co_name) do nothing;
        select c.co_id into v_consumer from pgq.consumer c
         where c.co_name = x_consumer_name
           for key share;
        exit when found;
    end loop;

    perform 1 from pgq.subscription s
      where s.sub_queue = v_queue and s.sub_consumer = v_consumer
        for update;
    if found then
        if x_tick_pos is not null then
            update pgq.subscription s
               set sub_last_tick = v_tick, sub_batch = null, sub_next_tick = null,
                   sub_active = pg_catalog.now()
             where s.sub_queue = v_queue and s.sub_consumer = v_consumer;
        end if;
        return 0;
    end if;

    insert into pgq.subscription (sub_queue, sub_consumer, sub_last_tick)
    values (v_queue, v_consumer, v_tick);
    return 1;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;

-- Remove a consumer's subscription and its pending retry events, and the consumer's name
-- when no other queue has it. Returns the number of subscriptions removed (0 when it was
-- not registered).
create or replace function pgq.unregister_consumer(
    x_queue_name text,
    x_consumer_name text)
returns integer as $$
declare
    v_sub    record;
    v_gone   int4[];
    v_cnt    integer;
begin
    select s.sub_id, s.sub_queue, s.sub_consumer, c.co_name into v_sub
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = x_queue_name and c.co_name = x_consumer_name
       for update of s, c;
    if not found then
        return 0;
    end if;

    if exists (select 1
                 from pgq.subscription m
                 join pgq.consumer mc on mc.co_id = m.sub_consumer
                where m.sub_queue = v_sub.sub_queue and m.sub_id = v_sub.sub_id
                  and m.sub_consumer <> v_sub.sub_consumer
                  and pg_catalog.starts_with(v_sub.co_name, mc.co_name || '.')) then
        -- A sub-consumer of a cooperative consumer (pgq_coop: it shares the consumer's
        -- sub_id and is named '<consumer>.<subconsumer>'): only its own row goes.
        delete from pgq.subscription s
         where s.sub_queue = v_sub.sub_queue and s.sub_consumer = v_sub.sub_consumer
        returning array[s.sub_consumer] into v_gone;
        v_cnt := 1;
    else
        -- A consumer goes with its sub-consumers and its retry events.
        delete from pgq.retry_queue r
         where r.ev_owner = v_sub.sub_id and r.ev_queue = v_sub.sub_queue;
        with d as (
            delete from pgq.subscription s
             where s.sub_queue = v_sub.sub_queue and s.sub_id = v_sub.sub_id
            returning s.sub_consumer)
        select pg_catalog.array_agg(d.sub_consumer), pg_catalog.count(*) into v_gone, v_cnt
          from d;
    end if;

    -- A consumer name subscribed nowhere any more is forgotten, as in the reference.
    delete from pgq.consumer c
     where c.co_id = any (v_gone)
       and not exists (select 1 from pgq.subscription s2 where s2.sub_consumer = c.co_id);
    return v_cnt;
end;
$$ language plpgsql security definer set search_path = pg_catalog, pg_temp;
