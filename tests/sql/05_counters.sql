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

-- pending_events counts what the ticks hold, not inserts after the last tick
select pgq.insert_event('fresh', 't', 'not ticked yet');
select consumer_name, pending_events from pgq.get_consumer_info('fresh');
select pgq.force_tick('fresh');
select pgq.ticker('fresh');
select consumer_name, pending_events from pgq.get_consumer_info('fresh');

-- ev_per_sec over the recent ticks, with tick times and counters given by an external
-- ticker so the numbers are exact
select pgq.create_queue('ext');
select pgq.register_consumer('ext', 'c');
select pgq.set_queue_config('ext', 'external_ticker', 'true');
select pgq.ticker('ext', 10 + i, timestamptz '2020-01-01 00:00:00+00' + i * interval '2 seconds',
                  1000 + i * i * 10)
  from generate_series(1, 30) i;
select queue_name, ev_per_sec, ev_new, last_tick_id from pgq.get_queue_info('ext');
select consumer_name, last_tick, pending_events from pgq.get_consumer_info('ext');
select pgq.register_consumer_at('ext', 'c', 35);
select consumer_name, last_tick, pending_events from pgq.get_consumer_info('ext');

-- an external queue that is paused takes no ticks either
select pgq.set_queue_config('ext', 'ticker_paused', 'true');
select pgq.ticker('ext', 100, now(), 5000);
select pgq.set_queue_config('ext', 'ticker_paused', 'false');
select pgq.ticker('ext', 100, '2020-01-01 01:00:00+00', 5000);

-- idle ticking: a new queue with one tick ticks at once, then waits (max_lag/2 = 30 min)
select pgq.create_queue('quiet');
select pgq.set_queue_config('quiet', 'ticker_max_lag', '1 hour');
select pgq.ticker('quiet') is not null as ticked;
select pgq.ticker('quiet') is not null as ticked;
select pgq.ticker() >= 0;
select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
 where q.queue_name = 'quiet';
