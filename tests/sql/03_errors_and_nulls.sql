-- Every function of the SQL API with bad arguments: NULLs, unknown queues, consumers,
-- batches and ticks. Run on both backends by tests/sql_compat.rs, which requires identical
-- output, so tools that match the reference's messages keep working. After each group
-- the catalog is printed to show that nothing was changed by the failed calls.
\set VERBOSITY terse
set client_min_messages = warning;

create view catalog_state as
select (select count(*) from pgq.queue) as queues,
       (select count(*) from pgq.consumer) as consumers,
       (select count(*) from pgq.subscription) as subs,
       (select count(*) from pgq.tick) as ticks,
       (select count(*) from pgq.retry_queue) as retries,
       (select count(*) from pgq.subscription where sub_batch is not null) as open_batches;

-- the API level tools check
select pgq.version() like '3.5%' as api_3_5;

-- NULL and unknown queue names in admin functions
select pgq.create_queue(null);
select pgq.drop_queue(null);
select pgq.drop_queue(null, true);
select pgq.drop_queue('q', null);
select pgq.drop_queue('nope', false);
select pgq.set_queue_config(null, 'ticker_max_count', '1');
select pgq.set_queue_config('nope', 'ticker_max_count', '1');
select pgq.register_consumer(null, 'c');
select pgq.register_consumer('nope', 'c');
select pgq.register_consumer_at(null, 'c', 1);
select pgq.register_consumer_at('nope', 'c', 1);
select pgq.unregister_consumer(null, 'c');
select pgq.unregister_consumer('nope', 'c');
select pgq.unregister_consumer('nope', null);
select * from catalog_state;

-- a queue and a consumer to misuse
select pgq.create_queue('q');
select pgq.register_consumer('q', 'c');
select * from catalog_state;

-- set_queue_config: unknown parameters, NULL names, bad values
select pgq.set_queue_config('q', null, '1');
select pgq.set_queue_config('q', 'queue_ticker_max_count', '1');
select pgq.set_queue_config('q', 'no_such_param', '1');
select pgq.set_queue_config('q', 'ticker_max_count', 'lots');
select pgq.set_queue_config('q', 'ticker_max_lag', 'soon');
select pgq.set_queue_config('q', 'ticker_paused', 'maybe');
-- (a NULL value is refused by both, with different messages: the reference fails inside its
-- EXECUTE, ours on the column's NOT NULL; tests/bad_input.rs checks ours)
select pgq.set_queue_config('q', 'rotation_period', '');
select queue_ticker_max_count, queue_ticker_max_lag, queue_ticker_paused
  from pgq.get_queue_info('q');

-- register: NULL consumer, unknown tick; unregister: unknown consumer
select pgq.register_consumer('q', null);
select pgq.register_consumer_at('q', 'c2', 99999);
select pgq.register_consumer_at('q', 'c', 99999);
select pgq.unregister_consumer('q', 'nobody');
select pgq.unregister_consumer('q', null);
select * from catalog_state;

-- produce: NULL and unknown queues
select pgq.insert_event(null, 't', 'd');
select pgq.insert_event('nope', 't', 'd');
select pgq.insert_event(null, 't', 'd', null, null, null, null);
select pgq.insert_event('nope', 't', 'd', null, null, null, null);
select pgq.insert_event_raw(null, null, now(), null, null, 't', 'd', null, null, null, null);
select pgq.insert_event_raw('nope', null, now(), null, null, 't', 'd', null, null, null, null);
select pgq.current_event_table(null);
select pgq.current_event_table('nope');
-- NULL payload fields are fine
select pgq.insert_event('q', null, null, null, null, null, null);
select pgq.insert_event_raw('q', null, null, null, null, null, null, null, null, null, null);

-- per-transaction event limit
update pgq.queue set queue_per_tx_limit = 2 where queue_name = 'q';
begin;
select pgq.insert_event('q', 't', 'one');
select pgq.insert_event('q', 't', 'two');
select pgq.insert_event('q', 't', 'three');
rollback;
update pgq.queue set queue_per_tx_limit = null where queue_name = 'q';

-- consume: NULL and unknown queue / consumer
select pgq.next_batch(null, 'c');
select pgq.next_batch('q', null);
select pgq.next_batch('nope', 'c');
select pgq.next_batch('q', 'nobody');
select * from pgq.next_batch_info(null, null);
select * from pgq.next_batch_info('q', 'nobody');
select * from pgq.next_batch_custom('q', 'nobody', null, null, null);
select * from pgq.next_batch_custom(null, 'c', null, null, null);
select * from catalog_state;

-- batches that do not exist
select * from pgq.get_batch_events(null);
select * from pgq.get_batch_events(12345);
select * from pgq.get_batch_info(null);
select * from pgq.get_batch_info(12345);
select pgq.finish_batch(null);
select pgq.finish_batch(12345);
select pgq.event_retry(12345, 1, 0);
select pgq.event_retry(12345, 1, now());
select pgq.event_retry(null, 1, 0);
select pgq.batch_retry(12345, 0);
select pgq.batch_retry(null, 0);
begin;
select * from pgq.get_batch_cursor(12345, 'cur', 10);
rollback;
begin;
select * from pgq.get_batch_cursor(12345, 'cur', 10, 'true');
rollback;
select * from catalog_state;

-- an open batch, misused
select pgq.force_tick('q');
select pgq.ticker('q') is not null as ticked;
select pgq.next_batch('q', 'c') as batch \gset
select count(*) from pgq.get_batch_events(:batch);
select pgq.event_retry(:batch, 999999, 0);
select pgq.event_retry(:batch, null, 0);
select pgq.event_retry(:batch, 999999, now());
begin;
select * from pgq.get_batch_cursor(:batch, null, 10);
select * from pgq.get_batch_cursor(:batch, null, 10, null);
select * from pgq.get_batch_cursor(null, 'cur', 10, null);
select * from pgq.get_batch_cursor(:batch, 'cur', null, null);
select * from pgq.get_batch_cursor(:batch, 'cur', null);
fetch 1 from cur;
rollback;
-- (the error position inside the generated query differs: print the SQLSTATE only)
\set VERBOSITY sqlstate
begin;
select ev_data from pgq.get_batch_cursor(:batch, 'cur', 10, 'no_such_column = 1');
rollback;
\set VERBOSITY terse
begin;
select ev_data from pgq.get_batch_cursor(:batch, 'cur', 10, 'ev_data is null');
rollback;
select * from catalog_state;
select pgq.finish_batch(:batch);

-- event_retry_raw: NULL and unknown queue / consumer
select pgq.event_retry_raw(null, 'c', now(), 1, now(), 0, 't', 'd', null, null, null, null);
select pgq.event_retry_raw('q', null, now(), 1, now(), 0, 't', 'd', null, null, null, null);
select pgq.event_retry_raw('nope', 'c', now(), 1, now(), 0, 't', 'd', null, null, null, null);
select pgq.event_retry_raw('q', 'nobody', now(), 1, now(), 0, 't', 'd', null, null, null, null);
select * from catalog_state;

-- ticker: NULL, unknown, paused and external queues
select pgq.ticker(null);
select pgq.ticker('nope');
select pgq.force_tick(null);
select pgq.force_tick('nope');
update pgq.queue set queue_ticker_paused = true where queue_name = 'q';
select pgq.ticker('q');
update pgq.queue set queue_ticker_paused = false, queue_external_ticker = true
 where queue_name = 'q';
select pgq.ticker('q');
select pgq.ticker('nope', 100, now(), 100);
select pgq.ticker(null, 100, now(), 100);
select pgq.ticker('q', 100, '2020-01-01 00:00:00+00', 5000);
select tick_id, tick_time, tick_event_seq from pgq.tick
 where tick_queue = (select queue_id from pgq.queue where queue_name = 'q') and tick_id = 100;
select pgq.ticker('q', 100, now(), 5000);
update pgq.queue set queue_external_ticker = false where queue_name = 'q';
select pgq.ticker('q', 101, now(), 5001);
select * from catalog_state;

-- information functions for unknown names: empty results, no errors
select * from pgq.get_queue_info('nope');
select queue_name, queue_ntables, queue_cur_table, ev_new, last_tick_id
  from pgq.get_queue_info(null);
select count(*) from pgq.get_queue_info();
select * from pgq.get_consumer_info('nope');
select * from pgq.get_consumer_info('q', 'nobody');
select queue_name, consumer_name from pgq.get_consumer_info(null);
select queue_name, consumer_name from pgq.get_consumer_info(null, null);
select queue_name, consumer_name from pgq.get_consumer_info();

-- maintenance with unknown or NULL queues does nothing
select pgq.maint_rotate_tables_step1('nope');
select pgq.maint_rotate_tables_step1(null);
select pgq.maint_rotate_tables_step2();
select pgq.maint_retry_events();
select count(*) from pgq.maint_tables_to_vacuum() where 1 = 0;
select * from catalog_state;

-- sequences: unknown, NULL
select pgq.seq_getval('no_such_seq');
select pgq.seq_getval(null);
select pgq.seq_setval('no_such_seq', 5);
select pgq.seq_setval(null, 5);

-- drop: consumers attached, then forced; twice
select pgq.drop_queue('q');
select pgq.drop_queue('q', false);
select * from catalog_state;
select pgq.drop_queue('q', true);
select pgq.drop_queue('q', true);
select * from catalog_state;

-- helpers tools call directly
select pgq.grant_perms('nope');
select pgq.grant_perms(null);
select pgq.quote_fqname(null);
select pgq.quote_fqname('a.b.c');
select pgq.create_queue('h');
select pgq.grant_perms('h');
select pgq.tune_storage('h');
select pgq.upgrade_schema();
select pgq.tune_storage('nope');
select pgq.tune_storage(null);
select c.relname, c.reloptions, t.reloptions as toast_options
  from pg_class c left join pg_class t on t.oid = c.reltoastrelid
 where c.relnamespace = 'pgq'::regnamespace and c.relname ~ '^event_[0-9]+_[0-9]+$'
 order by 1;
