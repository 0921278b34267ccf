-- libpgq schema, part 6: information functions for monitoring and tools.

create or replace function pgq.get_queue_info(
    in i_queue_name                 text,
    out queue_name                  text,
    out queue_ntables               integer,
    out queue_cur_table             integer,
    out queue_rotation_period       interval,
    out queue_switch_time           timestamptz,
    out queue_external_ticker       boolean,
    out queue_ticker_paused         boolean,
    out queue_ticker_max_count      integer,
    out queue_ticker_max_lag        interval,
    out queue_ticker_idle_period    interval,
    out ticker_lag                  interval,
    out ev_per_sec                  float8,
    out ev_new                      bigint,
    out last_tick_id                bigint)
returns setof record as $$
declare
    q       record;
    v_last  record;
    v_prev  record;
begin
    for q in
        select qq.* from pgq.queue qq
         where i_queue_name is null or qq.queue_name = i_queue_name
         order by qq.queue_name
    loop
        select t.tick_id, t.tick_time, t.tick_event_seq into v_last
          from pgq.tick t where t.tick_queue = q.queue_id
         order by t.tick_id desc limit 1;
        -- The rate is measured from the oldest tick among the last 21 tick ids, as the
        -- reference does: smoother than the last two ticks, and the same number.
        select t.tick_id, t.tick_time, t.tick_event_seq into v_prev
          from pgq.tick t where t.tick_queue = q.queue_id and t.tick_id >= v_last.tick_id - 20
         order by t.tick_id limit 1;

        queue_name := q.queue_name;
        queue_ntables := q.queue_ntables;
        queue_cur_table := q.queue_cur_table;
        queue_rotation_period := q.queue_rotation_period;
        queue_switch_time := q.queue_switch_time;
        queue_external_ticker := q.queue_external_ticker;
        queue_ticker_paused := q.queue_ticker_paused;
        queue_ticker_max_count := q.queue_ticker_max_count;
        queue_ticker_max_lag := q.queue_ticker_max_lag;
        queue_ticker_idle_period := q.queue_ticker_idle_period;
        ticker_lag := pg_catalog.now() - v_last.tick_time;
        -- NULL until there are two ticks apart in time.
        if v_prev.tick_id is not null and v_last.tick_time > v_prev.tick_time then
            ev_per_sec := (v_last.tick_event_seq - v_prev.tick_event_seq)::float8
                / pg_catalog.date_part('epoch', v_last.tick_time - v_prev.tick_time);
        else
            ev_per_sec := null;
        end if;
        ev_new := pgq.seq_getval(q.queue_event_seq) - v_last.tick_event_seq;
        last_tick_id := v_last.tick_id;
        return next;
    end loop;
    return;
end;
$$ language plpgsql stable security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.get_queue_info(
    out queue_name                  text,
    out queue_ntables               integer,
    out queue_cur_table             integer,
    out queue_rotation_period       interval,
    out queue_switch_time           timestamptz,
    out queue_external_ticker       boolean,
    out queue_ticker_paused         boolean,
    out queue_ticker_max_count      integer,
    out queue_ticker_max_lag        interval,
    out queue_ticker_idle_period    interval,
    out ticker_lag                  interval,
    out ev_per_sec                  float8,
    out ev_new                      bigint,
    out last_tick_id                bigint)
returns setof record as $$
    select * from pgq.get_queue_info(null::text);
$$ language sql stable security definer set search_path = pg_catalog, pg_temp;

-- Consumers of all queues, one queue, or one consumer of one queue. lag: age of the
-- consumer's position; last_seen: time since it last asked for or finished a batch;
-- pending_events: events between its position and the newest tick (events not ticked yet
-- do not count, as in the reference).
create or replace function pgq.get_consumer_info(
    in i_queue_name     text,
    in i_consumer_name  text,
    out queue_name      text,
    out consumer_name   text,
    out lag             interval,
    out last_seen       interval,
    out last_tick       bigint,
    out current_batch   bigint,
    out next_tick       bigint,
    out pending_events  bigint)
returns setof record as $$
    select q.queue_name, c.co_name,
           pg_catalog.now() - t.tick_time,
           pg_catalog.now() - s.sub_active,
           s.sub_last_tick, s.sub_batch, s.sub_next_tick,
           (select lt.tick_event_seq from pgq.tick lt
             where lt.tick_queue = s.sub_queue
             order by lt.tick_id desc limit 1) - t.tick_event_seq
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      left join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
     where ($1 is null or q.queue_name = $1)
       and ($2 is null or c.co_name = $2)
     order by 1, 2;
$$ language sql stable security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.get_consumer_info(
    in i_queue_name     text,
    out queue_name      text,
    out consumer_name   text,
    out lag             interval,
    out last_seen       interval,
    out last_tick       bigint,
    out current_batch   bigint,
    out next_tick       bigint,
    out pending_events  bigint)
returns setof record as $$
    select * from pgq.get_consumer_info($1, null::text);
$$ language sql stable security definer set search_path = pg_catalog, pg_temp;

create or replace function pgq.get_consumer_info(
    out queue_name      text,
    out consumer_name   text,
    out lag             interval,
    out last_seen       interval,
    out last_tick       bigint,
    out current_batch   bigint,
    out next_tick       bigint,
    out pending_events  bigint)
returns setof record as $$
    select * from pgq.get_consumer_info(null::text, null::text);
$$ language sql stable security definer set search_path = pg_catalog, pg_temp;

-- Details of an open batch; all NULL when no such batch is open.
create or replace function pgq.get_batch_info(
    in x_batch_id       bigint,
    out queue_name      text,
    out consumer_name   text,
    out batch_start     timestamptz,
    out batch_end       timestamptz,
    out prev_tick_id    bigint,
    out tick_id         bigint,
    out lag             interval,
    out seq_start       bigint,
    out seq_end         bigint)
as $$
begin
    -- plpgsql rather than SQL: an unknown batch then yields one row of NULLs, not NULL.
    select q.queue_name, c.co_name, pt.tick_time, ct.tick_time,
           s.sub_last_tick, s.sub_next_tick, pg_catalog.now() - ct.tick_time,
           pt.tick_event_seq, ct.tick_event_seq
      into queue_name, consumer_name, batch_start, batch_end, prev_tick_id, tick_id, lag,
           seq_start, seq_end
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      join pgq.tick pt on pt.tick_queue = s.sub_queue and pt.tick_id = s.sub_last_tick
      join pgq.tick ct on ct.tick_queue = s.sub_queue and ct.tick_id = s.sub_next_tick
     where s.sub_batch = x_batch_id;
end;
$$ language plpgsql stable security definer set search_path = pg_catalog, pg_temp;

-- The pgq API level this schema implements, then libpgq's own schema version. Tools
-- (pgqd among them) check that it starts with "3.".
create or replace function pgq.version()
returns text as $$
    select '3.5.0 (libpgq ' || coalesce(
        (select v.version from pgq.libpgq_schema v), 'unknown') || ')';
$$ language sql stable set search_path = pg_catalog, pg_temp;
