-- Raw inserts and retries with NULLs, min_lag, repositioning and unregistering with open
-- batches and pending retries, dropping a queue with all of that in it. Run on both
-- backends by tests/sql_compat.rs, which requires identical output.
\set VERBOSITY terse
set client_min_messages = warning;

select pgq.create_queue('r');
select pgq.register_consumer('r', 'c1');
select pgq.register_consumer('r', 'c2');

-- insert_event_raw: given id, NULL time, owner and retry values
select pgq.insert_event_raw('r', 1000, null, null, null, 'raw', 'null time', null, null, null, null);
select pgq.insert_event_raw('r', null, '2001-02-03 04:05:06+00', null, 7, 'raw', 'old time', 'x1', 'x2', 'x3', 'x4');
select pgq.force_tick('r') is not null, pgq.ticker('r') is not null;
select pgq.next_batch('r', 'c1') as b \gset
select ev_id, ev_time is not null as has_time, ev_retry, ev_type, ev_data, ev_extra1, ev_extra4
  from pgq.get_batch_events(:b) order by ev_id, ev_data;
select ev_time from pgq.get_batch_events(:b) where ev_data = 'old time';

-- event_retry_raw with NULLs
select pgq.event_retry_raw('r', 'c1', now(), null, now(), null, 't', 'no id', null, null, null, null);
select pgq.event_retry_raw('r', 'c1', now(), 2000, null, null, 't', 'no time', null, null, null, null);
select pgq.event_retry_raw('r', 'c1', null, 2001, now(), null, 't', 'no retry time', null, null, null, null);
select pgq.event_retry_raw('r', 'c1', now(), 2002, now(), null, 't', 'dup', null, null, null, null);
select pgq.event_retry_raw('r', 'c1', now(), 2002, now(), null, 't', 'dup', null, null, null, null);
select ev_id, ev_retry, ev_data from pgq.retry_queue order by ev_id;
select pgq.finish_batch(:b);

-- min_lag holds a fresh tick back
select pgq.insert_event('r', 't', 'lagged');
select pgq.force_tick('r') is not null, pgq.ticker('r') is not null;
select batch_id from pgq.next_batch_custom('r', 'c1', '1 hour', null, null);
select batch_id is not null from pgq.next_batch_custom('r', 'c1', '0', null, null);
select pgq.next_batch('r', 'c1') as b1 \gset
select ev_data from pgq.get_batch_events(:b1);

-- c2 has an open batch; repositioning drops it, and it is gone for good
select pgq.next_batch('r', 'c2') as b2 \gset
select count(*) from pgq.get_batch_events(:b2);
select pgq.register_consumer_at('r', 'c2',
    (select min(tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
      where q.queue_name = 'r'));
select * from pgq.get_batch_events(:b2);
select pgq.finish_batch(:b2);
select pgq.register_consumer('r', 'c2');
select consumer_name, current_batch is null as no_batch from pgq.get_consumer_info('r', 'c2');

-- unregister c1 with an open batch and pending retries
select count(*) from pgq.retry_queue;
select pgq.unregister_consumer('r', 'c1');
select count(*) from pgq.retry_queue;
select pgq.finish_batch(:b1);

-- drop with force while c2 has an open batch and retries
select pgq.next_batch('r', 'c2') as b2 \gset
select pgq.batch_retry(:b2, 3600) > 0;
select pgq.drop_queue('r');
select pgq.drop_queue('r', true);
select count(*) from pgq.retry_queue;
select count(*) from pgq.subscription;
select count(*) from pgq.tick;
select co_name from pgq.consumer;
select count(*) from pg_class where relnamespace = 'pgq'::regnamespace and relname like 'event\_%';

-- a queue whose ticks are all gone cannot take new consumers
select pgq.create_queue('tickless');
delete from pgq.tick where tick_queue = (select queue_id from pgq.queue where queue_name = 'tickless');
select pgq.register_consumer('tickless', 'c');
