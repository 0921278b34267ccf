-- Event counters as tools see them: tick_event_seq, ev_new, pending_events, the batch
-- sequence bounds, force_tick's jump, on a brand-new queue and after. Run on both backends
-- by tests/sql_compat.rs, which requires identical output.
\set VERBOSITY terse
set client_min_messages = warning;

select pgq.create_queue('fresh');
select pgq.register_consumer('fresh', 'c');
select tick_id, tick_event_seq from pgq.tick order by tick_id;
select queue_name, ev_new, last_tick_id from pgq.get_queue_info('fresh');
select pgq.insert_event('fresh', 't', 'first');
select queue_name, ev_new from pgq.get_queue_info('fresh');
select consumer_name, pending_events from pgq.get_consumer_info('fresh');
select pgq.insert_event('fresh', 't', 'second');
select queue_name, ev_new from pgq.get_queue_info('fresh');
select pgq.force_tick('fresh');
select pgq.ticker('fresh');
select tick_id, tick_event_seq from pgq.tick order by tick_id;
select batch_id, prev_tick_event_seq, cur_tick_event_seq from pgq.next_batch_info('fresh', 'c');
select seq_start, seq_end from pgq.get_batch_info(1);
select ev_id, ev_data from pgq.get_batch_events(1);
select pgq.finish_batch(1);
select consumer_name, pending_events from pgq.get_consumer_info('fresh');

-- force_tick on a queue whose sequence was never used
select pgq.create_queue('idle');
select pgq.force_tick('idle');
select pgq.ticker('idle');
select t.tick_id, t.tick_event_seq from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
 where q.queue_name = 'idle' order by 1;
select queue_name, ev_new from pgq.get_queue_info('idle');

-- force_tick leaves paused and externally ticked queues' counters alone
update pgq.queue set queue_ticker_paused = true where queue_name = 'idle';
select pgq.force_tick('idle');
select queue_name, ev_new from pgq.get_queue_info('idle');
update pgq.queue set queue_ticker_paused = false, queue_external_ticker = true
 where queue_name = 'idle';
select pgq.force_tick('idle');
select queue_name, ev_new from pgq.get_queue_info('idle');
