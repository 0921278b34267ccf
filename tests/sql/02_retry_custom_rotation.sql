-- Retries, custom batches, cursors, register_consumer_at, rotation and maintenance. Run on
-- both backends by tests/sql_compat.rs, which requires identical output.
\set VERBOSITY terse
set client_min_messages = warning;

select pgq.create_queue('jobs');
select pgq.register_consumer('jobs', 'worker');
select pgq.register_consumer('jobs', 'audit');
update pgq.queue set queue_ticker_max_lag = '0', queue_ticker_idle_period = '0';

select pgq.insert_event('jobs', 'job', 'a');
select pgq.insert_event('jobs', 'job', 'b');
select pgq.insert_event('jobs', 'job', 'c');
select pgq.ticker();

-- the worker retries b now and everything else later; audit takes the batch as it is
select pgq.next_batch('jobs', 'worker');
select pgq.event_retry(1, 2, 0);
select pgq.event_retry(1, 2, 0);
select pgq.event_retry(1, 3::bigint, now() + interval '1 hour');
select pgq.event_retry(1, 77, 0);
select ev_id, ev_retry, ev_type, ev_data from pgq.retry_queue order by ev_id;
select pgq.finish_batch(1);
select pgq.next_batch('jobs', 'audit');
select ev_id, ev_retry, ev_data from pgq.get_batch_events(2);
select pgq.finish_batch(2);

-- b comes back to the worker only, with ev_retry = 1; c waits for its time
select pgq.maint_retry_events();
select pgq.maint_retry_events();
select pgq.ticker();
select pgq.next_batch('jobs', 'worker');
select ev_id, ev_retry, ev_type, ev_data from pgq.get_batch_events(3);
select pgq.batch_retry(3, 0);
select pgq.finish_batch(3);
select pgq.next_batch('jobs', 'audit');
select ev_id, ev_retry, ev_data from pgq.get_batch_events(4);
select pgq.finish_batch(4);
select pgq.maint_retry_events();
select pgq.ticker();
select pgq.next_batch('jobs', 'worker');
select ev_id, ev_retry, ev_type, ev_data from pgq.get_batch_events(5);
select pgq.finish_batch(5);

-- a raw retry for one consumer, and for a consumer that is not there
select pgq.event_retry_raw('jobs', 'audit', now(), 500, now(), 3, 'raw', 'r', null, null, null, null);
select pgq.event_retry_raw('jobs', 'nobody', now(), 501, now(), 3, 'raw', 'r', null, null, null, null);
select pgq.maint_retry_events();
select pgq.ticker();
select pgq.next_batch('jobs', 'audit');
select ev_id, ev_retry, ev_type, ev_data from pgq.get_batch_events(6);
select pgq.finish_batch(6);

-- custom batches: held back by lag, by count, by interval; merged ticks
select pgq.insert_event('jobs', 'job', 'd');
select pgq.ticker();
select pgq.insert_event('jobs', 'job', 'e');
select pgq.ticker();
select batch_id from pgq.next_batch_custom('jobs', 'worker', '1 hour', null, null);
select batch_id from pgq.next_batch_custom('jobs', 'worker', null, 1000, null);
select batch_id from pgq.next_batch_custom('jobs', 'worker', null, null, '1 day');
select batch_id, cur_tick_id - prev_tick_id as ticks_merged
  from pgq.next_batch_custom('jobs', 'worker', null, 2, null);
select ev_id, ev_data from pgq.get_batch_events(7);
select pgq.finish_batch(7);

-- cursors; rows fetched later are shown without ev_time and ev_txid, which differ
create function pg_temp.fetch_rest(c refcursor)
returns table (id bigint, retry int4, typ text, data text) as $$
declare
    r record;
begin
    loop
        fetch c into r;
        exit when not found;
        id := r.ev_id; retry := r.ev_retry; typ := r.ev_type; data := r.ev_data;
        return next;
    end loop;
end $$ language plpgsql;
select pgq.next_batch('jobs', 'audit');
begin;
select ev_id, ev_data from pgq.get_batch_cursor(8, 'c1', 1);
select * from pg_temp.fetch_rest('c1');
close c1;
select ev_id, ev_data from pgq.get_batch_cursor(8, 'c2', 5, 'ev_data = ''e''');
close c2;
select ev_id, ev_data from pgq.get_batch_cursor(8, 'c3', 0);
select * from pg_temp.fetch_rest('c3');
select ev_id, ev_data from pgq.get_batch_cursor(8, 'c4', null);
select * from pg_temp.fetch_rest('c4');
select ev_id from pgq.get_batch_cursor(8, 'c4', 1);
commit;
select ev_id from pgq.get_batch_cursor(8, 'outside_tx', 1);
select ev_id from pgq.get_batch_cursor(999, 'c5', 1);
select pgq.finish_batch(8);

-- reposition: audit goes back to the tick before d and e, and sees them again
select pgq.register_consumer_at('jobs', 'audit', 999);
select pgq.register_consumer_at('jobs', 'audit', (select min(tick_id) from pgq.tick t, pgq.queue q
       where t.tick_queue = q.queue_id and q.queue_name = 'jobs' and t.tick_id >= 5));
select pgq.next_batch('jobs', 'audit');
select ev_data from pgq.get_batch_events(9);
select pgq.register_consumer_at('jobs', 'latecomer', 5);
select queue_name, consumer_name, last_tick, current_batch from pgq.get_consumer_info('jobs');

-- rotation: not due, then due but blocked by a lagging consumer, then done
select * from pgq.maint_operations();
update pgq.queue set queue_rotation_period = '0';
select * from pgq.maint_operations();
select pgq.maint_rotate_tables_step1('jobs');
select queue_cur_table from pgq.queue;
select pgq.maint_rotate_tables_step2();
select pgq.insert_event('jobs', 'job', 'after rotation');
select pgq.ticker();
select pgq.finish_batch(9);
select pgq.unregister_consumer('jobs', 'latecomer');
select pgq.next_batch('jobs', 'audit');
select ev_data from pgq.get_batch_events(10);
select pgq.finish_batch(10);
select pgq.next_batch('jobs', 'worker');
select ev_data from pgq.get_batch_events(11);
select pgq.finish_batch(11);
select queue_name, queue_cur_table from pgq.get_queue_info();
update pgq.queue set queue_extra_maint = array['pgq.version'];
select * from pgq.maint_operations();

-- sequences
create sequence compat_seq;
select pgq.seq_getval('compat_seq');
select pgq.seq_setval('compat_seq', 40);
select pgq.seq_setval('compat_seq', 4);
select pgq.seq_getval('public.compat_seq');
select pgq.quote_fqname('Weird.Name'), pgq.quote_fqname('plain');
