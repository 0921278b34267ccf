-- Maintenance as a worker sees it: retry moves in rounds, rotation (not due, blocked by a
-- consumer, done) with the ticks it drops, maint_operations with extra functions and the
-- PGQ add-ons' hooks. Run on both backends by tests/sql_compat.rs, which requires
-- identical output.
\set VERBOSITY terse
set client_min_messages = warning;

select pgq.create_queue('m');
select pgq.register_consumer('m', 'slow');
select pgq.register_consumer('m', 'fast');

-- 25 events, all retried by 'fast' at once: moved back 10 at a time
select count(pgq.insert_event('m', 'e', i::text)) from generate_series(1, 25) i;
select pgq.force_tick('m') is not null, pgq.ticker('m') is not null;
select pgq.next_batch('m', 'fast') as b \gset
select pgq.batch_retry(:b, 0);
select pgq.batch_retry(:b, 0);
select pgq.finish_batch(:b);
select pgq.maint_retry_events();
select pgq.maint_retry_events();
select pgq.maint_retry_events();
select pgq.maint_retry_events();
select count(*) from pgq.retry_queue;

-- rotation: not due (2 hours); then due; 'slow' still at the first tick holds it back
select * from pgq.maint_operations();
select pgq.maint_rotate_tables_step1('m');
update pgq.queue set queue_rotation_period = '0';
select * from pgq.maint_operations();
select pgq.maint_rotate_tables_step1('m');
select queue_cur_table from pgq.queue;
-- both consumers move on
select pgq.force_tick('m') is not null, pgq.ticker('m') is not null;
select pgq.next_batch('m', 'slow') as b \gset
select count(*) from pgq.get_batch_events(:b);
select pgq.finish_batch(:b);
select pgq.next_batch('m', 'fast') as b \gset
select count(*), min(ev_retry), max(ev_retry) from pgq.get_batch_events(:b);
select pgq.finish_batch(:b);

-- Rotate until it happens: whether a consumer is past the previous switch depends on the
-- xmin of its tick's snapshot, which any transaction in the cluster (other tests) can hold
-- back for a moment; so tick, move both consumers and try again, a bounded number of times.
do $$
declare
    b    bigint;
    cur  int4;
begin
    select queue_cur_table into cur from pgq.queue where queue_name = 'm';
    for i in 1 .. 500 loop
        perform pgq.force_tick('m');
        perform pgq.ticker('m');
        commit;
        b := pgq.next_batch('m', 'slow');
        if b is not null then perform pgq.finish_batch(b); end if;
        b := pgq.next_batch('m', 'fast');
        if b is not null then perform pgq.finish_batch(b); end if;
        commit;
        perform pgq.maint_rotate_tables_step1('m');
        commit;
        exit when (select queue_cur_table from pgq.queue where queue_name = 'm') <> cur;
        perform pg_sleep(0.01);
    end loop;
end $$;
select queue_cur_table, queue_switch_step2 is null as step2_pending from pgq.queue;
select * from pgq.maint_operations();
select pgq.maint_rotate_tables_step1('m');
select queue_cur_table from pgq.queue;
select pgq.maint_rotate_tables_step2();
select queue_cur_table, queue_switch_step2 is null as step2_pending from pgq.queue;
-- the ticks the consumers stand on survive
select count(*) as lost_positions from pgq.subscription s
 where not exists (select 1 from pgq.tick t where t.tick_queue = s.sub_queue
                                              and t.tick_id = s.sub_last_tick);

-- events written after the rotation are read from the new table
select pgq.insert_event('m', 'e', 'after') > 0;
select pgq.force_tick('m') is not null, pgq.ticker('m') is not null;
select pgq.next_batch('m', 'slow') as b \gset
select ev_data from pgq.get_batch_events(:b);
select pgq.finish_batch(:b);
select pgq.next_batch('m', 'fast') as b \gset
select ev_data from pgq.get_batch_events(:b);
select pgq.finish_batch(:b);

-- extra maintenance functions and the add-ons' hooks
update pgq.queue set queue_extra_maint = array['pgq.maint_retry_events', 'public.my_maint'];
create schema pgq_node;
create table pgq_node.node_info (queue_name text, node_type text);
insert into pgq_node.node_info values ('m', 'root'), ('other', 'leaf');
create function pgq_node.maint_watermark(text) returns int language sql as 'select 0';
create schema londiste;
create table londiste.seq_info (queue_name text, local boolean);
insert into londiste.seq_info values ('m', true), ('m', true), ('other', true);
create function londiste.root_check_seqs(text) returns int language sql as 'select 0';
create function londiste.periodic_maintenance() returns int language sql as 'select 0';
select * from pgq.maint_operations();
select * from pgq.maint_tables_to_vacuum();
