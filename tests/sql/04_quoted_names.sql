-- Queue and consumer names that need quoting (spaces, quotes, case, unicode, semicolons,
-- SQL fragments) through the whole life cycle; names are data, never SQL. Run on both
-- backends by tests/sql_compat.rs, which requires identical output.
\set VERBOSITY terse
set client_min_messages = warning;

select pgq.create_queue('Orders Queue');
select pgq.create_queue('orders queue');
select pgq.create_queue('it''s "quoted"');
select pgq.create_queue('drop; table pgq.queue; --');
select pgq.create_queue('Ünïcødé ✓ очередь');
select pgq.create_queue('back\slash');
select pgq.create_queue('pgq.event_1');
select queue_name from pgq.get_queue_info() order by 1;

select pgq.register_consumer(queue_name, c)
  from pgq.queue, unnest(array['Reader One', 'o''brien; --', 'ÜBER']) c
 order by queue_name, c;
select queue_name, consumer_name from pgq.get_consumer_info() order by 1, 2;

select pgq.insert_event(queue_name, 'type ' || queue_name, 'data for ' || queue_name)
  from pgq.queue order by queue_id;
select pgq.current_event_table(queue_name) is not null from pgq.queue order by queue_id;
select pgq.set_queue_config(queue_name, 'ticker_max_count', '1')
  from pgq.queue order by queue_id;
select pgq.force_tick(queue_name) is not null from pgq.queue order by queue_id;
select pgq.ticker();

-- every consumer of every queue gets exactly that queue's event
create function pg_temp.drain(q text, c text) returns setof text as $$
declare
    b bigint;
begin
    b := pgq.next_batch(q, c);
    return query select ev_type || ' / ' || ev_data from pgq.get_batch_events(b);
    perform pgq.finish_batch(b);
end $$ language plpgsql;
select q.queue_name, c, pg_temp.drain(q.queue_name, c)
  from pgq.queue q, unnest(array['Reader One', 'o''brien; --', 'ÜBER']) c
 order by 1, 2;

select pgq.unregister_consumer('it''s "quoted"', 'o''brien; --');
select pgq.unregister_consumer('drop; table pgq.queue; --', 'o''brien; --');
select pgq.drop_queue('Ünïcødé ✓ очередь', true);
select pgq.drop_queue('drop; table pgq.queue; --', true);
select queue_name from pgq.get_queue_info() order by 1;
select count(*) from pgq.queue;
select co_name from pgq.consumer order by 1;
