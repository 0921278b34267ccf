-- Queue and consumer life cycle, produce, tick, consume, finish; the answers and error
-- messages a tool sees. Run on both backends by tests/sql_compat.rs, which requires the
-- two outputs to be identical. Nothing here may print times, txids or snapshots.
\set VERBOSITY terse
set client_min_messages = warning;

-- admin on a queue that is not there
select pgq.insert_event('orders', 'new', 'x');
select pgq.current_event_table('orders');
select pgq.drop_queue('orders');
select pgq.drop_queue('orders', true);
select pgq.register_consumer('orders', 'billing');
select pgq.register_consumer_at('orders', 'billing', 1);
select pgq.unregister_consumer('orders', 'billing');
select pgq.next_batch('orders', 'billing');
select pgq.set_queue_config('orders', 'ticker_max_count', '10');
select pgq.ticker('orders');
select pgq.force_tick('orders');
select * from pgq.get_queue_info('orders');
select * from pgq.get_consumer_info('orders');
select * from pgq.get_consumer_info('orders', 'billing');

-- create twice, register twice
select pgq.create_queue('orders');
select pgq.create_queue('orders');
select pgq.register_consumer('orders', 'billing');
select pgq.register_consumer('orders', 'billing');
select pgq.register_consumer('orders', 'shipping');
select pgq.drop_queue('orders');
select queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events
  from pgq.get_consumer_info() order by 1, 2;

-- nothing ticked yet: no batch
select pgq.next_batch('orders', 'billing');
select * from pgq.next_batch_info('orders', 'billing');

-- produce in three transactions, one of them rolled back
begin;
select pgq.insert_event('orders', 'new', 'order 1');
select pgq.insert_event('orders', 'new', 'order 2', 'e1', 'e2', 'e3', 'e4');
commit;
begin;
select pgq.insert_event('orders', 'new', 'rolled back');
rollback;
select pgq.insert_event('orders', 'cancel', 'order 1');
select pgq.insert_event('orders', null, null);
select pgq.insert_event_raw('orders', 100, now(), null, null, 'raw', 'raw data', 'a', null, null, 'd');

select pgq.force_tick('orders');
select pgq.ticker('orders');
select queue_name, ev_new, last_tick_id from pgq.get_queue_info('orders');

-- both consumers see the same committed events, in ev_id order
select batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq - prev_tick_event_seq > 0 as has_events
  from pgq.next_batch_info('orders', 'billing');
select ev_id, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
  from pgq.get_batch_events(1);
-- asking again gives the same open batch
select pgq.next_batch('orders', 'billing');
select queue_name, consumer_name, prev_tick_id, tick_id from pgq.get_batch_info(1);
select queue_name, consumer_name, current_batch, next_tick
  from pgq.get_consumer_info('orders', 'billing');
select pgq.finish_batch(1);
select pgq.finish_batch(1);
select pgq.next_batch('orders', 'billing');

select pgq.next_batch('orders', 'shipping');
select ev_id, ev_type, ev_data from pgq.get_batch_events(2);
select pgq.finish_batch(2);

-- unknown batches
select * from pgq.get_batch_events(999);
select pgq.event_retry(999, 1, 10);
select pgq.batch_retry(999, 10);
select * from pgq.get_batch_info(999);

-- config
select pgq.set_queue_config('orders', 'ticker_max_count', '7');
select pgq.set_queue_config('orders', 'ticker_max_lag', '5 seconds');
select pgq.set_queue_config('orders', 'ticker_idle_period', '2 minutes');
select pgq.set_queue_config('orders', 'rotation_period', '1 hour');
select pgq.set_queue_config('orders', 'ticker_paused', 'true');
select pgq.ticker('orders');
select pgq.set_queue_config('orders', 'ticker_paused', 'false');
select pgq.set_queue_config('orders', 'external_ticker', 'true');
select pgq.ticker('orders');
select pgq.set_queue_config('orders', 'external_ticker', 'false');
select pgq.set_queue_config('orders', 'ticker_max_count', 'many');
select queue_name, queue_ticker_max_count, queue_ticker_max_lag, queue_ticker_idle_period,
       queue_rotation_period, queue_ticker_paused, queue_external_ticker
  from pgq.get_queue_info('orders');

-- disabled inserts
update pgq.queue set queue_disable_insert = true where queue_name = 'orders';
select pgq.insert_event('orders', 'new', 'refused');
set session_replication_role = replica;
select pgq.insert_event('orders', 'new', 'replayed');
set session_replication_role = origin;
update pgq.queue set queue_disable_insert = false where queue_name = 'orders';

-- unregister, then drop
select pgq.unregister_consumer('orders', 'shipping');
select pgq.unregister_consumer('orders', 'shipping');
select pgq.drop_queue('orders');
select pgq.drop_queue('orders', true);
select count(*) from pgq.queue;
select count(*) from pgq.subscription;
select count(*) from pgq.tick;
select co_name from pgq.consumer order by 1;
