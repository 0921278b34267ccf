-- libpgq schema, part 0: roles, schema, catalog tables.
--
-- Everything here is idempotent (IF NOT EXISTS / guarded DO blocks) because the installer
-- re-runs the whole script to upgrade an older libpgq install in place: tables and their
-- rows (queued events, subscriptions) survive, functions are replaced.
--
-- The catalog tables keep the names, columns and defaults of the official pgq 3.x
-- extension, because PGQ tools (pgq_node, londiste, monitoring queries) read them directly.

-- Re-runs would otherwise print a NOTICE for every object that already exists.
set local client_min_messages = warning;

-- Roles are cluster-wide. A database owner without CREATEROLE can still install libpgq:
-- the roles are then simply not created, and only the owner can use the queues until an
-- administrator creates them and re-runs the install (which grants on re-run).
do $roles$
declare
    r text;
begin
    foreach r in array array['pgq_reader', 'pgq_writer', 'pgq_admin'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = r) then
            begin
                execute pg_catalog.format('create role %I nologin', r);
            exception
                when insufficient_privilege then
                    raise notice 'libpgq: cannot create role % (no CREATEROLE); skipping its grants', r;
                when duplicate_object or unique_violation then
                    null; -- an install into another database of this cluster made it just now
            end;
        end if;
    end loop;
    -- pgq_admin may do everything the reader and writer may.
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_admin')
       and exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader')
       and exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_writer')
       and not pg_catalog.pg_has_role('pgq_admin', 'pgq_writer', 'member')
    then
        begin
            grant pgq_reader, pgq_writer to pgq_admin;
        exception
            when insufficient_privilege then
                raise notice 'libpgq: cannot grant pgq_reader/pgq_writer to pgq_admin';
            when unique_violation then
                null; -- a concurrent install into another database granted it just now
        end;
    end if;
end
$roles$;

create schema if not exists pgq;

-- Which libpgq schema version is installed; the installer reads it to decide between a
-- fresh install, an in-place upgrade and nothing to do. One row.
create table if not exists pgq.libpgq_schema (
    singleton     boolean primary key default true check (singleton),
    version       text not null,
    installed_at  timestamptz not null default now(),
    upgraded_at   timestamptz
);

-- Consumer names, shared by all queues.
create table if not exists pgq.consumer (
    co_id       serial primary key,
    co_name     text not null,
    constraint consumer_name_uq unique (co_name)
);

-- One row per queue with its ticker and rotation settings and its rotation state.
create table if not exists pgq.queue (
    queue_id                  serial primary key,
    queue_name                text not null,

    -- Rotation: events live in queue_ntables tables used round-robin; queue_cur_table
    -- receives inserts. Step 1 switches tables and records queue_switch_step1; step 2, in
    -- a later transaction, records queue_switch_step2. Transactions between the two marks
    -- may have written into either table.
    queue_ntables             integer not null default 3,
    queue_cur_table           integer not null default 0,
    queue_rotation_period     interval not null default '2 hours',
    queue_switch_step1        bigint not null default txid_current(),
    queue_switch_step2        bigint default txid_current(),
    queue_switch_time         timestamptz not null default now(),

    queue_external_ticker     boolean not null default false,
    queue_disable_insert      boolean not null default false,
    queue_ticker_paused       boolean not null default false,

    queue_ticker_max_count    integer not null default 500,
    queue_ticker_max_lag      interval not null default '3 seconds',
    queue_ticker_idle_period  interval not null default '1 minute',
    queue_per_tx_limit        integer,

    queue_data_pfx            text not null,
    queue_event_seq           text not null,
    queue_tick_seq            text not null,

    -- Extra maintenance functions run by maint_operations() for this queue.
    queue_extra_maint         text[],

    constraint queue_name_uq unique (queue_name)
);

-- Ticks: per queue, the snapshot at a moment. A batch is the span between two ticks.
create table if not exists pgq.tick (
    tick_queue      integer not null
                    constraint tick_queue_fkey references pgq.queue (queue_id),
    tick_id         bigint not null,
    tick_time       timestamptz not null default now(),
    tick_snapshot   txid_snapshot not null default txid_current_snapshot(),
    tick_event_seq  bigint not null,
    primary key (tick_queue, tick_id)
);

create sequence if not exists pgq.batch_id_seq;

-- Consumer positions. sub_last_tick is the last finished tick; while a batch is open,
-- sub_batch and sub_next_tick are set.
create table if not exists pgq.subscription (
    sub_id          serial not null,
    sub_queue       integer not null
                    constraint sub_queue_fkey references pgq.queue (queue_id),
    sub_consumer    integer not null
                    constraint sub_consumer_fkey references pgq.consumer (co_id),
    sub_last_tick   bigint,
    sub_active      timestamptz not null default now(),
    sub_batch       bigint,
    sub_next_tick   bigint,
    primary key (sub_queue, sub_consumer),
    constraint subscription_batch_idx unique (sub_batch)
);

-- The shape of every event table. ev_owner is NULL for events everyone sees, or the
-- sub_id of the one subscription a retried event is meant for.
create table if not exists pgq.event_template (
    ev_id       bigint not null,
    ev_time     timestamptz not null,
    ev_txid     bigint not null default txid_current(),
    ev_owner    integer,
    ev_retry    integer,
    ev_type     text,
    ev_data     text,
    ev_extra1   text,
    ev_extra2   text,
    ev_extra3   text,
    ev_extra4   text
);

-- Events waiting to be re-delivered to one consumer.
create table if not exists pgq.retry_queue (
    ev_retry_after  timestamptz not null,
    ev_queue        integer not null
                    constraint rq_queue_id_fkey references pgq.queue (queue_id),
    like pgq.event_template,
    constraint rq_pkey primary key (ev_owner, ev_id)
);
alter table pgq.retry_queue alter column ev_txid drop not null;
alter table pgq.retry_queue alter column ev_txid drop default;
create index if not exists rq_retry_idx on pgq.retry_queue (ev_retry_after);

-- Constraint names are the reference's, because they appear in error messages tools may
-- match ("duplicate key value violates unique constraint \"rq_pkey\""). Revision 1 of
-- libpgq let PostgreSQL name them; rename those in place, and add the retry queue's
-- reference to its queue that it lacked.
do $names$
declare
    r record;
begin
    for r in
        select * from (values
            ('pgq.consumer', 'consumer_co_name_key', 'consumer_name_uq'),
            ('pgq.queue', 'queue_queue_name_key', 'queue_name_uq'),
            ('pgq.tick', 'tick_tick_queue_fkey', 'tick_queue_fkey'),
            ('pgq.subscription', 'subscription_sub_queue_fkey', 'sub_queue_fkey'),
            ('pgq.subscription', 'subscription_sub_consumer_fkey', 'sub_consumer_fkey'),
            ('pgq.subscription', 'subscription_sub_batch_key', 'subscription_batch_idx'),
            ('pgq.retry_queue', 'retry_queue_pkey', 'rq_pkey')) v (tbl, old, new)
    loop
        if exists (select 1 from pg_catalog.pg_constraint c
                    where c.conrelid = r.tbl::regclass and c.conname = r.old) then
            execute pg_catalog.format('alter table %s rename constraint %I to %I',
                                      r.tbl, r.old, r.new);
        end if;
    end loop;
    if not exists (select 1 from pg_catalog.pg_constraint c
                    where c.conrelid = 'pgq.retry_queue'::regclass
                      and c.conname = 'rq_queue_id_fkey') then
        -- Rows of queues dropped without cleaning up would fail the new reference.
        delete from pgq.retry_queue rq
         where not exists (select 1 from pgq.queue q where q.queue_id = rq.ev_queue);
        alter table pgq.retry_queue add constraint rq_queue_id_fkey
            foreign key (ev_queue) references pgq.queue (queue_id);
    end if;
end
$names$;
