-- libpgq schema, part 9: privileges.
--
-- Same model as the reference: anyone may look at queue state; pgq_reader consumes,
-- pgq_writer produces, pgq_admin does everything. Functions are revoked from PUBLIC and
-- granted by role. Roles missing on this cluster (installer without CREATEROLE) are skipped.

grant usage on schema pgq to public;
grant select on pgq.queue, pgq.tick, pgq.subscription, pgq.consumer to public;

do $grants$
declare
    f       record;
    v_role  text;
    v_stmt  text;
    -- Which role may call which function (by name; all overloads).
    v_reader text[] := array['batch_event_sql', 'batch_event_tables', 'batch_retry',
        'event_retry', 'event_retry_many', 'find_tick_helper', 'finish_and_next_batch', 'finish_batch', 'force_tick', 'get_batch_cursor',
        'get_batch_events',
        'get_batch_info', 'look_ahead_cursor', 'next_batch', 'next_batch_custom', 'next_batch_info',
        'register_consumer', 'register_consumer_at', 'unregister_consumer'];
    v_writer text[] := array['current_event_table', 'insert_event'];
    -- (_batch_tables, _event_select and _event_sql are pure functions that the SECURITY
    -- INVOKER batch readers call. _direct_lease reads what anyone may read in pgq.queue;
    -- whether a producer may use its table is the table's INSERT privilege.)
    v_public text[] := array['get_consumer_info', 'get_queue_info', 'quote_fqname',
        'seq_getval', 'version', '_batch_tables', '_event_select', '_event_sql',
        '_direct_lease', '_direct_lease_span'];
begin
    for f in
        select p.oid::regprocedure::text as sig, p.proname
          from pg_catalog.pg_proc p
         where p.pronamespace = 'pgq'::regnamespace
    loop
        execute 'revoke all on function ' || f.sig || ' from public';
        if f.proname = any (v_public) then
            execute 'grant execute on function ' || f.sig || ' to public';
        end if;
        for v_role in
            select r from unnest(array['pgq_reader', 'pgq_writer', 'pgq_admin']) r
             where exists (select 1 from pg_catalog.pg_roles where rolname = r)
        loop
            if v_role = 'pgq_admin' and not f.proname like '\_%'
               or v_role = 'pgq_reader' and f.proname = any (v_reader)
               or v_role = 'pgq_writer' and f.proname = any (v_writer)
            then
                execute 'grant execute on function ' || f.sig || ' to ' || v_role;
            end if;
        end loop;
    end loop;

    foreach v_stmt in array array[
        'grant select on pgq.queue, pgq.tick, pgq.subscription, pgq.consumer, pgq.event_template to pgq_reader',
        'grant select, insert, update, delete on pgq.queue, pgq.tick, pgq.subscription, pgq.consumer, pgq.retry_queue to pgq_admin',
        'grant select, insert, truncate on pgq.event_template to pgq_admin']
    loop
        begin
            execute v_stmt;
        exception when undefined_object then
            null;
        end;
    end loop;

    -- Queues created before an administrator added the roles get their grants now, and
    -- queues made by an older revision their storage settings.
    perform pgq.grant_perms(q.queue_name), pgq.tune_storage(q.queue_name) from pgq.queue q;
end
$grants$;
