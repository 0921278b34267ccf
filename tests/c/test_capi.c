/*
 * C tests of libpgq's C ABI: normal use and abuse. Built by tests/c/run.sh with
 *   -std=c11 -Wall -Wextra -Werror -pedantic -fsanitize=address,undefined
 * against a library built with the cargo feature test-hooks (for pgq_test_panic).
 *
 *   test_capi DSN     (DSN of an empty database of a running PostgreSQL; superuser)
 *
 * Every test prints "ok NAME" or the failed checks; the exit status is the number of
 * failed tests (capped at 100).
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep under -std=c11 */
#include <pgq.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* Test-only export (cargo feature test-hooks); deliberately not in pgq.h. */
pgq_status pgq_test_panic(pgq_error **err);

static const char *DSN;
static pgq_client *CLIENT;
static int failures_in_test;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
            failures_in_test++;                                                            \
        }                                                                                  \
    } while (0)

/* For calls that take `&err`: checks status, that err was set exactly on failure, and
 * that the error's status matches; frees it. */
#define EXPECT(want, fn, ...)                                                              \
    do {                                                                                   \
        pgq_error *err_ = NULL;                                                            \
        pgq_status st_ = fn(__VA_ARGS__, &err_);                                           \
        if (st_ != (want)) {                                                               \
            fprintf(stderr, "  FAILED %s:%d: %s: got %s (%s), want %s\n", __FILE__,        \
                    __LINE__, #fn, pgq_status_name(st_),                                   \
                    err_ ? pgq_error_message(err_) : "no error", pgq_status_name(want));   \
            failures_in_test++;                                                            \
        } else if ((want) == PGQ_STATUS_OK && err_ != NULL) {                              \
            fprintf(stderr, "  FAILED %s:%d: %s: error set on success\n", __FILE__,        \
                    __LINE__, #fn);                                                        \
            failures_in_test++;                                                            \
        } else if ((want) != PGQ_STATUS_OK &&                                              \
                   (err_ == NULL || pgq_error_status(err_) != st_ ||                       \
                    strlen(pgq_error_message(err_)) == 0)) {                               \
            fprintf(stderr, "  FAILED %s:%d: %s: missing or inconsistent error\n",         \
                    __FILE__, __LINE__, #fn);                                              \
            failures_in_test++;                                                            \
        }                                                                                  \
        pgq_error_free(err_);                                                              \
    } while (0)

#define S(lit) lit, (sizeof(lit) - 1)

static pgq_str text(const char *s) {
    pgq_str v;
    v.data = s;
    v.len = strlen(s);
    return v;
}

static pgq_str null_text(void) {
    pgq_str v;
    v.data = NULL;
    v.len = 0;
    return v;
}

static int str_eq(pgq_str s, const char *want) {
    if (want == NULL)
        return s.data == NULL;
    return s.data != NULL && s.len == strlen(want) && memcmp(s.data, want, s.len) == 0;
}

/* Makes the queue's pending events visible to its consumers: force a tick and tick. */
static void tick(const char *q) {
    EXPECT(PGQ_STATUS_OK, pgq_force_tick, CLIENT, q, strlen(q));
    EXPECT(PGQ_STATUS_OK, pgq_tick_queue, CLIENT, q, strlen(q), NULL);
}

static void setup_queue(const char *q, const char *consumer) {
    EXPECT(PGQ_STATUS_OK, pgq_create_queue, CLIENT, q, strlen(q), NULL);
    if (consumer)
        EXPECT(PGQ_STATUS_OK, pgq_register_consumer, CLIENT, q, strlen(q), consumer,
               strlen(consumer), NULL);
}

/* Consumes everything available (ticking first) and returns the number of events; checks
 * each data against `seen` (data is a decimal index < n_seen) when given. */
static long drain(const char *q, const char *name, int *seen, long n_seen) {
    pgq_consumer *c = NULL;
    long n = 0;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, q, strlen(q), name, strlen(name), &c);
    if (!c)
        return -1;
    tick(q);
    for (int round = 0; round < 100; round++) {
        pgq_batch *b = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
        if (!b)
            break;
        const pgq_event *ev = NULL;
        pgq_event_fields f;
        memset(&f, 0, sizeof f);
        f.struct_size = sizeof f;
        for (;;) {
            /* the one-call form the Python binding uses */
            pgq_error *err = NULL;
            pgq_status st = pgq_batch_next_event_fields(b, &ev, &f, &err);
            CHECK(st == PGQ_STATUS_OK);
            pgq_error_free(err);
            if (st != PGQ_STATUS_OK || !ev)
                break;
            n++;
            CHECK(f.id == pgq_event_id(ev));
            if (seen) {
                pgq_str d = f.data;
                char buf[32] = {0};
                if (d.data && d.len < sizeof buf) {
                    memcpy(buf, d.data, d.len);
                    long i = strtol(buf, NULL, 10);
                    if (i >= 0 && i < n_seen)
                        seen[i]++;
                }
            }
        }
        EXPECT(PGQ_STATUS_OK, pgq_batch_finish, b);
    }
    pgq_consumer_free(c);
    return n;
}

/* ------------------------------------------------------------------------------------ */

static void test_version(void) {
    CHECK(strcmp(pgq_version(), PGQ_VERSION) == 0);
    CHECK(pgq_abi_version() == PGQ_ABI_VERSION);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", PGQ_VERSION_MAJOR, PGQ_VERSION_MINOR,
             PGQ_VERSION_PATCH);
    CHECK(strcmp(want, PGQ_VERSION) == 0);
    CHECK(strcmp(pgq_status_name(PGQ_STATUS_NO_SUCH_QUEUE), "PGQ_STATUS_NO_SUCH_QUEUE") == 0);
    CHECK(strcmp(pgq_status_name(9999), "unknown") == 0);
}

static void test_null_pointers(void) {
    pgq_error *err = NULL;
    pgq_client *cl = NULL;
    pgq_consumer *co = NULL;
    pgq_tx *tx = NULL;
    pgq_batch *b = NULL;
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    const pgq_event *evp = NULL;
    pgq_queue_info *qi = NULL;
    pgq_queue_list *ql = NULL;
    pgq_consumer_list *cli = NULL;

    /* Every free accepts NULL. */
    pgq_error_free(NULL);
    pgq_client_options_free(NULL);
    pgq_client_free(NULL);
    pgq_queue_info_free(NULL);
    pgq_queue_list_free(NULL);
    pgq_consumer_list_free(NULL);
    pgq_tx_free(NULL);
    pgq_tx_rollback(NULL);
    pgq_consumer_free(NULL);
    pgq_batch_free(NULL);

    /* Errors and accessors on NULL. */
    CHECK(strcmp(pgq_error_message(NULL), "") == 0);
    CHECK(pgq_error_sqlstate(NULL) == NULL);
    CHECK(pgq_error_status(NULL) == PGQ_STATUS_NULL_POINTER);
    CHECK(pgq_queue_list_len(NULL) == 0);
    CHECK(pgq_queue_list_at(NULL, 0) == NULL);
    CHECK(pgq_consumer_list_len(NULL) == 0);
    CHECK(pgq_consumer_list_at(NULL, 0) == NULL);
    CHECK(pgq_queue_info_name(NULL).data == NULL);
    CHECK(pgq_queue_info_last_tick_id(NULL) == -1);
    CHECK(pgq_consumer_info_name(NULL).data == NULL);
    CHECK(pgq_consumer_info_pending_events(NULL) == -1);
    CHECK(pgq_batch_id(NULL) == -1);
    CHECK(pgq_batch_tick_id(NULL) == -1);
    CHECK(pgq_batch_prev_tick_id(NULL) == -1);
    CHECK(pgq_batch_queue(NULL).data == NULL);
    CHECK(pgq_batch_consumer(NULL).data == NULL);
    CHECK(pgq_batch_subconsumer(NULL).data == NULL);
    CHECK(pgq_batch_tick_time_us(NULL) == -1);
    CHECK(!pgq_batch_is_stopping(NULL));
    CHECK(pgq_event_id(NULL) == -1);
    CHECK(pgq_event_retry(NULL) == -1);
    CHECK(pgq_event_data(NULL).data == NULL);
    CHECK(pgq_event_type(NULL).data == NULL);

    /* Fallible calls: NULL handle, NULL string with a length, NULL out-parameter. */
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_options_set_pool_size, NULL, 2);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_options_set_connect_timeout_ms, NULL, 2);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_connect, NULL, 5, NULL, &cl);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_connect, DSN, strlen(DSN), NULL, NULL);
    /* options are consumed even when the call fails (ASan would report a leak otherwise) */
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_connect, DSN, strlen(DSN),
           pgq_client_options_new(), NULL);
    CHECK(cl == NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_install, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_create_queue, NULL, S("q"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_create_queue, CLIENT, NULL, 3, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_drop_queue, NULL, S("q"), false);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_drop_queue, CLIENT, NULL, 1, false);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_set_queue_config, NULL, S("q"), S("p"), S("v"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_set_queue_config, CLIENT, NULL, 1, S("p"), S("v"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_set_queue_config, CLIENT, S("q"), NULL, 1, S("v"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_set_queue_config, CLIENT, S("q"), S("p"), NULL, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_register_consumer, NULL, S("q"), S("c"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_register_consumer, CLIENT, NULL, 1, S("c"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_register_consumer, CLIENT, S("q"), NULL, 1, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_register_consumer_at, NULL, S("q"), S("c"), 1, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_unregister_consumer, NULL, S("q"), S("c"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_unregister_consumer, CLIENT, S("q"), NULL, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tick, NULL, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tick_queue, NULL, S("q"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_force_tick, NULL, S("q"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_force_tick, CLIENT, NULL, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_retry_events, NULL, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_maintenance, NULL, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_queue_info_get, NULL, S("q"), &qi);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_queue_info_get, CLIENT, S("q"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_queue_list_get, NULL, &ql);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_queue_list_get, CLIENT, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_list_get, NULL, NULL, 0, &cli);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_list_get, CLIENT, NULL, 0, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_send, NULL, S("q"), &ev, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_send, CLIENT, NULL, 1, &ev, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_send, CLIENT, S("q"), NULL, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_send_many, NULL, S("q"), &ev, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_send_many, CLIENT, S("q"), NULL, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_begin, NULL, &tx);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_begin, CLIENT, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_send, NULL, S("q"), &ev, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_send_many, NULL, S("q"), &ev, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_execute, NULL, S("select 1"));
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_tx_commit, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_new, NULL, S("q"), S("c"), &co);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_new, CLIENT, NULL, 1, S("c"), &co);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_new, CLIENT, S("q"), NULL, 1, &co);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_new, CLIENT, S("q"), S("c"), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_register, NULL, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_unregister, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_set_fetch_size, NULL, 10);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_set_subconsumer, NULL, S("s"), 0);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_next_batch, NULL, 0, &b);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_next_event, NULL, &evp);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_retry, NULL, 1, 0);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_finish, NULL);
    {
        pgq_event_fields f;
        f.struct_size = sizeof f;
        EXPECT(PGQ_STATUS_NULL_POINTER, pgq_event_fields_get, NULL, &f);
        EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_next_event_fields, NULL, &evp, &f);
    }
    CHECK(co == NULL && tx == NULL && b == NULL && qi == NULL && ql == NULL && cli == NULL);

    /* A consumer handle with a NULL out-parameter for next_batch. */
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("q"), S("c"), &co);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_next_batch, co, 0, NULL);
    pgq_consumer_free(co);

    /* err == NULL is allowed: only the status reports the failure. */
    CHECK(pgq_install(NULL, NULL) == PGQ_STATUS_NULL_POINTER);
    CHECK(pgq_create_queue(CLIENT, NULL, 3, NULL, NULL) == PGQ_STATUS_NULL_POINTER);
    (void)err;
}

static void test_invalid_utf8_and_lengths(void) {
    const char bad[] = "q\xff\xfe";
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_create_queue, CLIENT, bad, 3, NULL);
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_client_connect, bad, 3, NULL, &(pgq_client *){NULL});
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_register_consumer, CLIENT, S("q"), bad, 3, NULL);

    setup_queue("utf8q", "c");
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = text("t");
    ev.data.data = bad;
    ev.data.len = 3;
    {
        pgq_error *err = NULL;
        CHECK(pgq_send(CLIENT, S("utf8q"), &ev, NULL, &err) == PGQ_STATUS_INVALID_UTF8);
        CHECK(err && strstr(pgq_error_message(err), "data") != NULL);
        pgq_error_free(err);
    }
    pgq_new_event evs[3];
    memset(evs, 0, sizeof evs);
    evs[2].extra3.data = bad;
    evs[2].extra3.len = 3;
    {
        pgq_error *err = NULL;
        CHECK(pgq_send_many(CLIENT, S("utf8q"), evs, 3, &err) == PGQ_STATUS_INVALID_UTF8);
        CHECK(err && strstr(pgq_error_message(err), "event 2") != NULL);
        pgq_error_free(err);
    }
    /* A NUL byte inside text is valid UTF-8 but PostgreSQL cannot store it. */
    ev.data.data = "a\0b";
    ev.data.len = 3;
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_send, CLIENT, S("utf8q"), &ev, NULL);

    /* Zero lengths: len 0 is the empty string (ptr not read), which is not a valid name. */
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_create_queue, CLIENT, NULL, 0, NULL);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_create_queue, CLIENT, "ignored", 0, NULL);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_consumer_new, CLIENT, S("q"), NULL, 0,
           &(pgq_consumer *){NULL});
    EXPECT(PGQ_STATUS_OK, pgq_send_many, CLIENT, S("utf8q"), NULL, 0);
    /* An empty DSN means libpq defaults; whatever happens, the call reports cleanly. */

    /* Empty string vs SQL NULL survive the round trip, also for zero-length fields. */
    memset(&ev, 0, sizeof ev);
    ev.type.data = "unused";
    ev.type.len = 0; /* "" */
    ev.data = null_text();
    ev.extra1 = text("x");
    EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, S("utf8q"), &ev, NULL);
    pgq_consumer *c = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("utf8q"), S("c"), &c);
    tick("utf8q");
    pgq_batch *b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
    CHECK(b != NULL);
    if (b) {
        const pgq_event *e = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e);
        CHECK(e != NULL);
        if (e) {
            CHECK(str_eq(pgq_event_type(e), ""));
            CHECK(pgq_event_type(e).data != NULL);
            CHECK(str_eq(pgq_event_data(e), NULL));
            CHECK(str_eq(pgq_event_extra1(e), "x"));
            CHECK(str_eq(pgq_event_extra2(e), NULL));
        }
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e);
        CHECK(e == NULL);
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e); /* stays at the end */
        CHECK(e == NULL);
        EXPECT(PGQ_STATUS_OK, pgq_batch_finish, b);
    }
    pgq_consumer_free(c);
}

static void test_out_of_range(void) {
    pgq_client_options *o = pgq_client_options_new();
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_client_options_set_pool_size, o, 0);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_client_options_set_connect_timeout_ms, o, 0);
    EXPECT(PGQ_STATUS_OK, pgq_client_options_set_pool_size, o, 3);
    pgq_client_options_free(o);

    setup_queue("rangeq", "c1");
    pgq_queue_list *ql = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_queue_list_get, CLIENT, &ql);
    size_t n = pgq_queue_list_len(ql);
    CHECK(n >= 1);
    CHECK(pgq_queue_list_at(ql, n) == NULL);
    CHECK(pgq_queue_list_at(ql, (size_t)-1) == NULL);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += str_eq(pgq_queue_info_name(pgq_queue_list_at(ql, i)), "rangeq");
    CHECK(found == 1);
    pgq_queue_list_free(ql);

    pgq_consumer_list *cl = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_list_get, CLIENT, S("rangeq"), &cl);
    CHECK(pgq_consumer_list_len(cl) == 1);
    const pgq_consumer_info *ci = pgq_consumer_list_at(cl, 0);
    CHECK(str_eq(pgq_consumer_info_name(ci), "c1"));
    CHECK(str_eq(pgq_consumer_info_queue(ci), "rangeq"));
    CHECK(pgq_consumer_info_current_batch(ci) == -1);
    CHECK(pgq_consumer_list_at(cl, 1) == NULL);
    pgq_consumer_list_free(cl);

    pgq_consumer *c = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("rangeq"), S("c1"), &c);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_consumer_set_fetch_size, c, 0);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_set_fetch_size, c, 1);
    pgq_consumer_free(c);

    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_set_logger, NULL, NULL, NULL, 99);
}

static void test_admin_and_errors(void) {
    bool created = false;
    EXPECT(PGQ_STATUS_OK, pgq_create_queue, CLIENT, S("adminq"), &created);
    CHECK(created);
    EXPECT(PGQ_STATUS_OK, pgq_create_queue, CLIENT, S("adminq"), &created);
    CHECK(!created);
    EXPECT(PGQ_STATUS_OK, pgq_set_queue_config, CLIENT, S("adminq"), S("ticker_max_count"),
           S("42"));
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_set_queue_config, CLIENT, S("adminq"), S("bogus"),
           S("1"));
    pgq_queue_info *qi = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_queue_info_get, CLIENT, S("adminq"), &qi);
    CHECK(str_eq(pgq_queue_info_name(qi), "adminq"));
    CHECK(pgq_queue_info_ticker_max_count(qi) == 42);
    CHECK(pgq_queue_info_ntables(qi) >= 1);
    CHECK(pgq_queue_info_switch_time_us(qi) > 1500000000000000LL);
    CHECK(pgq_queue_info_last_tick_id(qi) >= 1);
    pgq_queue_info_free(qi);

    /* A server-side error carries its SQLSTATE. */
    pgq_error *err = NULL;
    qi = NULL;
    CHECK(pgq_queue_info_get(CLIENT, S("nosuchq"), &qi, &err) == PGQ_STATUS_NO_SUCH_QUEUE);
    CHECK(qi == NULL);
    pgq_error_free(err);
    err = NULL;
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    CHECK(pgq_send(CLIENT, S("nosuchq"), &ev, NULL, &err) == PGQ_STATUS_NO_SUCH_QUEUE);
    CHECK(err && pgq_error_sqlstate(err) && strlen(pgq_error_sqlstate(err)) == 5);
    pgq_error_free(err);

    EXPECT(PGQ_STATUS_OK, pgq_register_consumer, CLIENT, S("adminq"), S("c"), &created);
    CHECK(created);
    EXPECT(PGQ_STATUS_CONSUMERS_ATTACHED, pgq_drop_queue, CLIENT, S("adminq"), false);
    EXPECT(PGQ_STATUS_OK, pgq_unregister_consumer, CLIENT, S("adminq"), S("c"));
    EXPECT(PGQ_STATUS_OK, pgq_drop_queue, CLIENT, S("adminq"), false);
    int64_t ticked = -5;
    EXPECT(PGQ_STATUS_OK, pgq_tick, CLIENT, &ticked);
    CHECK(ticked >= 0);
    uint64_t moved = 99, ops = 99;
    EXPECT(PGQ_STATUS_OK, pgq_retry_events, CLIENT, &moved);
    EXPECT(PGQ_STATUS_OK, pgq_maintenance, CLIENT, &ops);
}

static void test_produce_consume_retry(void) {
    setup_queue("pcq", "c");
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = text("t");
    ev.data = text("0");
    ev.extra1 = text("e1");
    ev.extra2 = text("e2");
    ev.extra3 = text("e3");
    ev.extra4 = text("e4");
    int64_t id = 0;
    EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, S("pcq"), &ev, &id);
    CHECK(id > 0);
    pgq_new_event evs[5];
    char data[5][4];
    for (int i = 0; i < 5; i++) {
        memset(&evs[i], 0, sizeof evs[i]);
        snprintf(data[i], sizeof data[i], "%d", i + 1);
        evs[i].type = text("bulk");
        evs[i].data = text(data[i]);
    }
    EXPECT(PGQ_STATUS_OK, pgq_send_many, CLIENT, S("pcq"), evs, 5);

    pgq_consumer *c = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("pcq"), S("c"), &c);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_set_fetch_size, c, 2); /* several fetch rounds */
    tick("pcq");
    pgq_batch *b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 1000, &b);
    CHECK(b != NULL);
    if (!b) {
        pgq_consumer_free(c);
        return;
    }
    CHECK(pgq_batch_id(b) > 0);
    CHECK(pgq_batch_tick_id(b) > pgq_batch_prev_tick_id(b));
    CHECK(str_eq(pgq_batch_queue(b), "pcq"));
    CHECK(str_eq(pgq_batch_consumer(b), "c"));
    CHECK(str_eq(pgq_batch_subconsumer(b), NULL));
    CHECK(pgq_batch_tick_time_us(b) > 1500000000000000LL);
    CHECK(!pgq_batch_is_stopping(b));
    int n = 0;
    int64_t retry_id = -1;
    const pgq_event *e = NULL;
    for (;;) {
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e);
        if (!e)
            break;
        n++;
        CHECK(pgq_event_retry(e) == -1);
        CHECK(pgq_event_txid(e) > 0);
        CHECK(pgq_event_time_us(e) > 1500000000000000LL);
        pgq_event_fields f;
        memset(&f, 0, sizeof f);
        EXPECT(PGQ_STATUS_OUT_OF_RANGE, pgq_event_fields_get, e, &f); /* struct_size unset */
        f.struct_size = sizeof f;
        EXPECT(PGQ_STATUS_OK, pgq_event_fields_get, e, &f);
        CHECK(f.id == pgq_event_id(e) && f.txid == pgq_event_txid(e));
        CHECK(f.time_us == pgq_event_time_us(e) && f.retry == pgq_event_retry(e));
        CHECK(f.data.data == pgq_event_data(e).data && f.data.len == pgq_event_data(e).len);
        CHECK(f.type.data == pgq_event_type(e).data);
        CHECK(f.extra4.data == pgq_event_extra4(e).data);
        if (pgq_event_id(e) == id) {
            CHECK(str_eq(pgq_event_type(e), "t"));
            CHECK(str_eq(pgq_event_data(e), "0"));
            CHECK(str_eq(pgq_event_extra1(e), "e1"));
            CHECK(str_eq(pgq_event_extra2(e), "e2"));
            CHECK(str_eq(pgq_event_extra3(e), "e3"));
            CHECK(str_eq(pgq_event_extra4(e), "e4"));
        }
        if (str_eq(pgq_event_data(e), "3")) {
            retry_id = pgq_event_id(e);
            EXPECT(PGQ_STATUS_OK, pgq_batch_retry, b, retry_id, 0);
        }
    }
    CHECK(n == 6);
    CHECK(retry_id > 0);
    EXPECT(PGQ_STATUS_OK, pgq_batch_finish, b);

    /* The retried event comes back (after the retry queue is processed and a tick). */
    EXPECT(PGQ_STATUS_OK, pgq_retry_events, CLIENT, NULL);
    tick("pcq");
    b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 1000, &b);
    CHECK(b != NULL);
    if (b) {
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e);
        CHECK(e != NULL && pgq_event_id(e) == retry_id && pgq_event_retry(e) == 1);
        /* freeing unfinished rolls back: the same batch comes again */
        int64_t bid = pgq_batch_id(b);
        pgq_batch_free(b);
        b = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
        CHECK(b != NULL && pgq_batch_id(b) == bid);
        if (b)
            EXPECT(PGQ_STATUS_OK, pgq_batch_finish, b);
    }
    /* No batch within a short timeout: OK with NULL. */
    b = (pgq_batch *)&b; /* must be overwritten */
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 50, &b);
    CHECK(b == NULL);

    /* Not registered. */
    pgq_consumer *stranger = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("pcq"), S("stranger"), &stranger);
    b = NULL;
    EXPECT(PGQ_STATUS_NOT_SUBSCRIBED, pgq_consumer_next_batch, stranger, 0, &b);
    CHECK(b == NULL);
    bool created = false;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_register, stranger, &created);
    CHECK(created);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_unregister, stranger);
    pgq_consumer_free(stranger);
    pgq_consumer_free(c);
}

static void test_transactions(void) {
    setup_queue("txq", "c");
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data = text("0");
    pgq_tx *tx = NULL;

    /* Rolled back: nothing arrives. */
    EXPECT(PGQ_STATUS_OK, pgq_tx_begin, CLIENT, &tx);
    EXPECT(PGQ_STATUS_OK, pgq_tx_send, tx, S("txq"), &ev, NULL);
    pgq_tx_rollback(tx);
    /* Freed unfinished: rolled back too. */
    tx = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_tx_begin, CLIENT, &tx);
    EXPECT(PGQ_STATUS_OK, pgq_tx_send_many, tx, S("txq"), &ev, 1);
    pgq_tx_free(tx);
    CHECK(drain("txq", "c", NULL, 0) == 0);

    /* Committed: events and SQL together. */
    tx = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_tx_begin, CLIENT, &tx);
    EXPECT(PGQ_STATUS_OK, pgq_tx_execute, tx, S("create table txq_side (id int)"));
    int64_t id = 0;
    EXPECT(PGQ_STATUS_OK, pgq_tx_send, tx, S("txq"), &ev, &id);
    CHECK(id > 0);
    pgq_new_event evs[2];
    memset(evs, 0, sizeof evs);
    EXPECT(PGQ_STATUS_OK, pgq_tx_send_many, tx, S("txq"), evs, 2);
    EXPECT(PGQ_STATUS_OK, pgq_tx_send_many, tx, S("txq"), NULL, 0);
    EXPECT(PGQ_STATUS_OK, pgq_tx_commit, tx);
    CHECK(drain("txq", "c", NULL, 0) == 3);

    /* A failing statement aborts the transaction; commit then fails and frees it. */
    tx = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_tx_begin, CLIENT, &tx);
    EXPECT(PGQ_STATUS_OK, pgq_tx_send, tx, S("txq"), &ev, NULL);
    EXPECT(PGQ_STATUS_DATABASE, pgq_tx_execute, tx, S("select * from no_such_table"));
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_tx_execute, tx, "\xff", 1);
    pgq_status st = pgq_tx_commit(tx, NULL);
    CHECK(st == PGQ_STATUS_INVALID_STATE);
    CHECK(drain("txq", "c", NULL, 0) == 0);
}

/* Several threads share one client: producers and readers at once. */
#define THREADS 4
#define PER_THREAD 40

struct thread_arg {
    int index;
    int failures;
};

static void *producer_thread(void *p) {
    struct thread_arg *a = p;
    char buf[16];
    for (int i = 0; i < PER_THREAD; i++) {
        pgq_new_event ev;
        memset(&ev, 0, sizeof ev);
        snprintf(buf, sizeof buf, "%d", a->index * PER_THREAD + i);
        ev.data = text(buf);
        pgq_error *err = NULL;
        if (pgq_send(CLIENT, S("mtq"), &ev, NULL, &err) != PGQ_STATUS_OK) {
            fprintf(stderr, "  thread %d: %s\n", a->index, pgq_error_message(err));
            a->failures++;
        }
        pgq_error_free(err);
        pgq_queue_info *qi = NULL;
        if (pgq_queue_info_get(CLIENT, S("mtq"), &qi, NULL) != PGQ_STATUS_OK)
            a->failures++;
        pgq_queue_info_free(qi);
    }
    return NULL;
}

static void test_threads(void) {
    setup_queue("mtq", "c");
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].index = i;
        args[i].failures = 0;
        CHECK(pthread_create(&th[i], NULL, producer_thread, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].failures == 0);
    }
    int seen[THREADS * PER_THREAD] = {0};
    CHECK(drain("mtq", "c", seen, THREADS * PER_THREAD) == THREADS * PER_THREAD);
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        CHECK(seen[i] == 1);
}

static void test_panic_boundary(void) {
    pgq_error *err = NULL;
    CHECK(pgq_test_panic(&err) == PGQ_STATUS_PANIC);
    CHECK(err != NULL && pgq_error_status(err) == PGQ_STATUS_PANIC);
    CHECK(err != NULL && strstr(pgq_error_message(err), "panicked") != NULL);
    pgq_error_free(err);
    CHECK(pgq_test_panic(NULL) == PGQ_STATUS_PANIC);
    /* The library still works afterwards. */
    EXPECT(PGQ_STATUS_OK, pgq_tick, CLIENT, NULL);
}

/* Logger: records arrive with level and target; user_data_free runs on replacement. */
struct log_state {
    int records;
    int debug_from_pgq;
    int freed;
};

static void on_log(void *ud, pgq_log_level level, const char *target, size_t target_len,
                   const char *msg, size_t msg_len) {
    struct log_state *s = ud;
    s->records++;
    if (level == PGQ_LOG_DEBUG && target_len >= 3 && memcmp(target, "pgq", 3) == 0 &&
        msg_len > 0 && msg != NULL)
        s->debug_from_pgq++;
}

static void free_log_state(void *ud) {
    ((struct log_state *)ud)->freed++;
}

/* Connecting logs at debug level. */
static void connect_once(void) {
    pgq_client *cl = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_client_connect, DSN, strlen(DSN), NULL, &cl);
    pgq_client_free(cl);
}

static void test_logger(void) {
    struct log_state a = {0, 0, 0}, b = {0, 0, 0};
    EXPECT(PGQ_STATUS_OK, pgq_set_logger, on_log, &a, free_log_state, PGQ_LOG_DEBUG);
    connect_once();
    CHECK(a.debug_from_pgq >= 1);
    EXPECT(PGQ_STATUS_OK, pgq_set_logger, on_log, &b, free_log_state, PGQ_LOG_ERROR);
    CHECK(a.freed == 1);
    connect_once();
    CHECK(b.records == 0); /* nothing at error level */
    EXPECT(PGQ_STATUS_OK, pgq_set_logger, NULL, NULL, NULL, PGQ_LOG_OFF);
    CHECK(b.freed == 1);
    CHECK(a.freed == 1);
}

/* A server that is not there: a clear error; then the real one works. A connection that
 * dies under a transaction: a clear error; then the client recovers. */
static void test_dead_server(void) {
    const char *dead = "host=127.0.0.1 port=1 connect_timeout=2";
    pgq_client *cl = NULL;
    pgq_error *err = NULL;
    CHECK(pgq_client_connect(dead, strlen(dead), NULL, &cl, &err) == PGQ_STATUS_CONNECT);
    CHECK(cl == NULL);
    CHECK(err && strstr(pgq_error_message(err), "127.0.0.1") != NULL);
    pgq_error_free(err);
    EXPECT(PGQ_STATUS_OK, pgq_client_connect, DSN, strlen(DSN), NULL, &cl);
    pgq_client_free(cl);

    pgq_tx *tx = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_tx_begin, CLIENT, &tx);
    err = NULL;
    pgq_status st = pgq_tx_execute(tx, S("select pg_terminate_backend(pg_backend_pid())"), &err);
    CHECK(st == PGQ_STATUS_CONNECTION_LOST);
    if (st != PGQ_STATUS_CONNECTION_LOST)
        fprintf(stderr, "  got %s: %s\n", pgq_status_name(st), pgq_error_message(err));
    pgq_error_free(err);
    CHECK(pgq_tx_commit(tx, NULL) != PGQ_STATUS_OK);
    /* The pool replaces the broken connection. */
    for (int i = 0; i < 10; i++)
        EXPECT(PGQ_STATUS_OK, pgq_tick, CLIENT, NULL);
}


/* Cooperative pull consumers: two subconsumers share one consumer's batches. */
static void test_coop_pull(void) {
    setup_queue("cq", NULL);
    pgq_consumer *a = NULL, *b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("cq"), S("c"), &a);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("cq"), S("c"), &b);
    if (!a || !b) {
        pgq_consumer_free(a);
        pgq_consumer_free(b);
        return;
    }
    /* not in coop mode yet */
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_consumer_register_subconsumer, a, NULL);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_consumer_set_subconsumer, a, NULL, 0, 0);
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_consumer_set_subconsumer, a, "\xff", 1, 0);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_set_subconsumer, a, S("s1"), 0);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_set_subconsumer, b, S("s2"), 60000);
    bool created = false;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_register_subconsumer, a, &created);
    CHECK(created);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_register_subconsumer, b, &created);
    CHECK(created);

    /* two batches: a takes the first and keeps it open, b gets the second */
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data = text("1");
    EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, S("cq"), &ev, NULL);
    tick("cq");
    ev.data = text("2");
    EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, S("cq"), &ev, NULL);
    tick("cq");
    pgq_batch *ba = NULL, *bb = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, a, 0, &ba);
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, b, 0, &bb);
    CHECK(ba != NULL && bb != NULL);
    if (ba && bb) {
        CHECK(pgq_batch_id(ba) != pgq_batch_id(bb));
        CHECK(str_eq(pgq_batch_subconsumer(ba), "s1"));
        CHECK(str_eq(pgq_batch_subconsumer(bb), "s2"));
        const pgq_event *e = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, ba, &e);
        CHECK(e && str_eq(pgq_event_data(e), "1"));
        EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, bb, &e);
        CHECK(e && str_eq(pgq_event_data(e), "2"));
        EXPECT(PGQ_STATUS_OK, pgq_batch_finish, bb);
        /* a's batch is still open in the database: unregistering a refuses... */
        int64_t open_id = pgq_batch_id(ba);
        pgq_batch_free(ba); /* rolled back: still a's open batch */
        EXPECT(PGQ_STATUS_BATCH_OPEN, pgq_consumer_unregister_subconsumer, a, false);
        /* ...unless it releases the batch, which a sibling then gets */
        EXPECT(PGQ_STATUS_OK, pgq_consumer_unregister_subconsumer, a, true);
        bb = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, b, 0, &bb);
        CHECK(bb != NULL && pgq_batch_id(bb) == open_id);
        if (bb)
            EXPECT(PGQ_STATUS_OK, pgq_batch_finish, bb);
    } else {
        pgq_batch_free(ba);
        pgq_batch_free(bb);
    }
    EXPECT(PGQ_STATUS_OK, pgq_consumer_unregister_subconsumer, b, false);
    pgq_consumer_free(a);
    pgq_consumer_free(b);
}

/* ---- workers and ticker ------------------------------------------------------------- */

/* Waits (bounded) until cond() holds; a condition wait, not a timing assumption. */
static int wait_until(int (*cond)(void *), void *arg, int timeout_ms) {
    struct timespec pause = {0, 5 * 1000 * 1000};
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        if (cond(arg))
            return 1;
        nanosleep(&pause, NULL);
    }
    return cond(arg);
}

struct wstate {
    atomic_long events;
    atomic_long calls;
    atomic_int fail_first;   /* handler returns 1 for this many calls */
    atomic_int stop_in_handler;
    atomic_int free_in_handler;
    atomic_int join_status;  /* status of pgq_worker_join called inside the handler */
    atomic_int finish_status;
    atomic_int freed;
    _Atomic(pgq_worker *) worker;
    long want;
};

static void wstate_init(struct wstate *w, long want) {
    atomic_init(&w->events, 0);
    atomic_init(&w->calls, 0);
    atomic_init(&w->fail_first, 0);
    atomic_init(&w->stop_in_handler, 0);
    atomic_init(&w->free_in_handler, 0);
    atomic_init(&w->join_status, -1);
    atomic_init(&w->finish_status, -1);
    atomic_init(&w->freed, 0);
    atomic_init(&w->worker, NULL);
    w->want = want;
}

static int32_t count_handler(void *ud, pgq_batch *b) {
    struct wstate *w = ud;
    atomic_fetch_add(&w->calls, 1);
    const pgq_event *ev = NULL;
    long n = 0;
    while (pgq_batch_next_event(b, &ev, NULL) == PGQ_STATUS_OK && ev) {
        n++;
        if (pgq_event_retry(ev) == -1 && str_eq(pgq_event_type(ev), "retry-me"))
            pgq_batch_retry(b, pgq_event_id(ev), 0, NULL);
    }
    /* The worker owns the batch: finishing or freeing it here is refused. */
    atomic_store(&w->finish_status, (int)pgq_batch_finish(b, NULL));
    pgq_batch_free(b);
    if (atomic_load(&w->fail_first) > 0) {
        atomic_fetch_sub(&w->fail_first, 1);
        return 1;
    }
    atomic_fetch_add(&w->events, n);
    pgq_worker *self = atomic_load(&w->worker);
    if (self && atomic_load(&w->stop_in_handler)) {
        atomic_store(&w->join_status, (int)pgq_worker_join(self, NULL));
        pgq_worker_stop(self, NULL);
        pgq_worker_stop(self, NULL); /* idempotent */
    }
    if (self && atomic_load(&w->free_in_handler))
        pgq_worker_free(self); /* deferred until this call returns */
    return 0;
}

static void free_wstate(void *ud) {
    atomic_fetch_add(&((struct wstate *)ud)->freed, 1);
}

static int reached(void *p) {
    struct wstate *w = p;
    return atomic_load(&w->events) >= w->want;
}

static int was_freed(void *p) {
    return atomic_load(&((struct wstate *)p)->freed) > 0;
}

static int retry_queued(void *p) {
    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    return pgq_worker_stats_get(p, &s, NULL) == PGQ_STATUS_OK && s.retries >= 1;
}

struct stats_goal {
    pgq_worker *w;
    uint64_t events;
};

/* Counters are updated after the batch is finished, i.e. after the handler returned. */
static int stats_reached(void *p) {
    struct stats_goal *g = p;
    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    return pgq_worker_stats_get(g->w, &s, NULL) == PGQ_STATUS_OK && s.events >= g->events;
}

static pgq_worker_options *fast_options(void) {
    pgq_worker_options *o = pgq_worker_options_new();
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_poll_interval_ms, o, 10);
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_retry_backoff_ms, o, 1, 20);
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_fetch_size, o, 3);
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_read_ahead, o, true);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_options_set_read_ahead, NULL, false);
    return o;
}

static void send_n(const char *q, int n, const char *type) {
    for (int i = 0; i < n; i++) {
        pgq_new_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = text(type);
        ev.data = text("x");
        EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, q, strlen(q), &ev, NULL);
    }
    tick(q);
}

/* pgq_batch_finish_next: a pull loop that finishes each batch and takes the next in one
 * call sees every event once; bad arguments free the batch, which then comes again. */
static void test_finish_next(void) {
    setup_queue("fnq", "c");
    send_n("fnq", 2, "a");
    send_n("fnq", 3, "b");
    send_n("fnq", 1, "c");
    pgq_consumer *c = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("fnq"), S("c"), &c);
    if (!c)
        return;
    /* One event per fetch: the second batch (3 events) reads the third one ahead. */
    EXPECT(PGQ_STATUS_OK, pgq_consumer_set_fetch_size, c, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_consumer_set_read_ahead, NULL, true);
    CHECK(!pgq_batch_looked_ahead(NULL));
    pgq_batch *b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
    CHECK(b != NULL);
    int64_t first = b ? pgq_batch_id(b) : -1;
    /* NULL out-pointer: the batch is freed (rolled back) and comes again. */
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_finish_next, b, c, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_batch_finish_next, NULL, c, &b);
    b = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
    CHECK(b != NULL && pgq_batch_id(b) == first);
    long events = 0;
    int batches = 0;
    while (b) {
        const pgq_event *e = NULL;
        for (;;) {
            EXPECT(PGQ_STATUS_OK, pgq_batch_next_event, b, &e);
            if (!e)
                break;
            events++;
        }
        batches++;
        /* From the third batch on, each was read ahead by the one before. */
        CHECK(pgq_batch_looked_ahead(b) == (batches >= 3));
        pgq_batch *next = (pgq_batch *)&next; /* must be overwritten */
        EXPECT(PGQ_STATUS_OK, pgq_batch_finish_next, b, c, &next);
        b = next;
        if (batches > 10)
            break;
    }
    CHECK(events == 6);
    CHECK(batches == 3);
    b = (pgq_batch *)&b;
    EXPECT(PGQ_STATUS_OK, pgq_consumer_next_batch, c, 0, &b);
    CHECK(b == NULL);
    pgq_consumer_free(c);
}

static void test_worker(void) {
    setup_queue("wq", "w");
    struct wstate st;
    wstate_init(&st, 7);
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("wq"), S("w"), fast_options(),
           count_handler, &st, free_wstate, &w);
    CHECK(w != NULL);
    if (!w)
        return;
    send_n("wq", 6, "plain");
    send_n("wq", 1, "retry-me");
    CHECK(wait_until(reached, &st, 10000));
    CHECK(atomic_load(&st.finish_status) == PGQ_STATUS_INVALID_STATE);
    /* the tagged event comes back once the retry queue is processed and ticked; the
     * worker queues the retry when it finishes the batch, after the handler returned */
    CHECK(wait_until(retry_queued, w, 10000));
    st.want = 8;
    EXPECT(PGQ_STATUS_OK, pgq_retry_events, CLIENT, NULL);
    tick("wq");
    CHECK(wait_until(reached, &st, 10000));
    struct stats_goal goal = {w, 8};
    CHECK(wait_until(stats_reached, &goal, 10000));

    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    EXPECT(PGQ_STATUS_OUT_OF_RANGE, pgq_worker_stats_get, w, &s); /* struct_size unset */
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_OK, pgq_worker_stats_get, w, &s);
    CHECK(s.struct_size == sizeof s);
    CHECK(s.looked_ahead <= s.batches);
    {
        /* A caller compiled before looked_ahead existed gets the fields it knows. */
        pgq_worker_stats old;
        memset(&old, 0xAB, sizeof old);
        old.struct_size = offsetof(pgq_worker_stats, looked_ahead);
        EXPECT(PGQ_STATUS_OK, pgq_worker_stats_get, w, &old);
        CHECK(old.struct_size == offsetof(pgq_worker_stats, looked_ahead));
        CHECK(old.events >= 8);
        CHECK(old.looked_ahead == 0xABABABABABABABABull);
        old.struct_size = offsetof(pgq_worker_stats, looked_ahead) - 1;
        EXPECT(PGQ_STATUS_OUT_OF_RANGE, pgq_worker_stats_get, w, &old);
    }
    CHECK(s.events >= 8);
    CHECK(s.batches >= 2);
    CHECK(s.retries >= 1);
    CHECK(s.handler_errors == 0);
    CHECK(s.threads >= 1);
    CHECK(s.last_batch_time_us > 0);

    /* Stop from another thread, join, join again, free: user_data_free runs once. */
    EXPECT(PGQ_STATUS_OK, pgq_worker_stop, w);
    EXPECT(PGQ_STATUS_OK, pgq_worker_join, w);
    EXPECT(PGQ_STATUS_OK, pgq_worker_join, w);
    CHECK(atomic_load(&st.freed) == 0);
    pgq_worker_free(w);
    CHECK(atomic_load(&st.freed) == 1);
}

static void test_worker_handler_error(void) {
    setup_queue("weq", "w");
    struct wstate st;
    wstate_init(&st, 3);
    atomic_store(&st.fail_first, 2); /* the batch fails twice, then succeeds */
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("weq"), S("w"), fast_options(),
           count_handler, &st, free_wstate, &w);
    if (!w)
        return;
    send_n("weq", 3, "plain");
    CHECK(wait_until(reached, &st, 10000));
    CHECK(atomic_load(&st.events) == 3); /* counted once: the failed calls did not count */
    CHECK(atomic_load(&st.calls) >= 3);
    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_OK, pgq_worker_stats_get, w, &s);
    CHECK(s.handler_errors == 2);
    pgq_worker_free(w);
    CHECK(atomic_load(&st.freed) == 1);

    /* stop-on-error: join reports the handler's failure. */
    setup_queue("weq2", "w");
    wstate_init(&st, 1);
    atomic_store(&st.fail_first, 1000);
    pgq_worker_options *o = fast_options();
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_stop_on_error, o, true);
    w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("weq2"), S("w"), o, count_handler, &st,
           free_wstate, &w);
    if (!w)
        return;
    send_n("weq2", 1, "plain");
    EXPECT(PGQ_STATUS_HANDLER, pgq_worker_join, w);
    pgq_worker_free(w);
    /* the batch was not finished: a pull consumer gets it */
    CHECK(drain("weq2", "w", NULL, 0) == 1);
}

static void test_worker_stop_from_handler(void) {
    setup_queue("wsq", "w");
    struct wstate st;
    wstate_init(&st, 2);
    atomic_store(&st.stop_in_handler, 1);
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("wsq"), S("w"), fast_options(),
           count_handler, &st, free_wstate, &w);
    if (!w)
        return;
    atomic_store(&st.worker, w);
    send_n("wsq", 2, "plain");
    /* The handler stops its own worker; the join here then returns. */
    EXPECT(PGQ_STATUS_OK, pgq_worker_join, w);
    CHECK(atomic_load(&st.join_status) == PGQ_STATUS_WOULD_DEADLOCK);
    CHECK(atomic_load(&st.events) == 2);
    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_OK, pgq_worker_stats_get, w, &s);
    CHECK(s.batches == 1); /* the handler's batch was still finished */
    CHECK(s.threads == 0);
    pgq_worker_free(w);
    CHECK(drain("wsq", "w", NULL, 0) == 0);

    /* Freeing the worker from its own handler: deferred, then user_data_free runs. */
    setup_queue("wfq", "w");
    wstate_init(&st, 1);
    atomic_store(&st.free_in_handler, 1);
    w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("wfq"), S("w"), fast_options(),
           count_handler, &st, free_wstate, &w);
    if (!w)
        return;
    atomic_store(&st.worker, w);
    send_n("wfq", 1, "plain");
    CHECK(wait_until(was_freed, &st, 10000));
    CHECK(atomic_load(&st.events) == 1);
}

static void test_worker_start_errors(void) {
    struct wstate st;
    wstate_init(&st, 0);
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_start, NULL, S("q"), S("c"), NULL,
           count_handler, &st, free_wstate, &w);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_start, CLIENT, S("q"), S("c"),
           pgq_worker_options_new(), NULL, &st, free_wstate, &w);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_start, CLIENT, S("q"), S("c"), NULL,
           count_handler, &st, free_wstate, NULL);
    EXPECT(PGQ_STATUS_INVALID_UTF8, pgq_worker_start, CLIENT, "\xff", 1, S("c"), NULL,
           count_handler, &st, free_wstate, &w);
    pgq_worker_options *o = pgq_worker_options_new();
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_options_set_workers, o, 0);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_options_set_fetch_size, o, 0);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_options_set_poll_interval_ms, o, 0);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_options_set_retry_backoff_ms, o, 0, 10);
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_options_set_retry_backoff_ms, o, 20, 10);
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_workers, o, 2);
    /* two threads need cooperative mode */
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_worker_start, CLIENT, S("q"), S("c"), o,
           count_handler, &st, free_wstate, &w);
    CHECK(w == NULL);
    CHECK(atomic_load(&st.freed) == 0); /* on failure the caller keeps user_data */
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_options_set_workers, NULL, 1);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_options_set_subconsumer, NULL, S("s"), 0);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_stop, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_join, NULL);
    pgq_worker_stats s;
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_worker_stats_get, NULL, &s);
    pgq_worker_free(NULL);
    pgq_worker_options_free(NULL);
}

/* Cooperative worker: two threads, each its own subconsumer, share the batches. */
static void test_worker_coop(void) {
    setup_queue("wcq", NULL);
    const char *subs[2] = {"s-0", "s-1"};
    for (int i = 0; i < 2; i++) {
        pgq_consumer *c = NULL;
        EXPECT(PGQ_STATUS_OK, pgq_consumer_new, CLIENT, S("wcq"), S("w"), &c);
        EXPECT(PGQ_STATUS_OK, pgq_consumer_set_subconsumer, c, subs[i], 3, 0);
        EXPECT(PGQ_STATUS_OK, pgq_consumer_register_subconsumer, c, NULL);
        pgq_consumer_free(c);
    }
    struct wstate st;
    wstate_init(&st, 12);
    pgq_worker_options *o = fast_options();
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_workers, o, 2);
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_subconsumer, o, S("s"), 60000);
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("wcq"), S("w"), o, count_handler, &st,
           free_wstate, &w);
    if (!w)
        return;
    for (int i = 0; i < 4; i++)
        send_n("wcq", 3, "plain"); /* four batches */
    CHECK(wait_until(reached, &st, 15000));
    struct stats_goal goal = {w, 12};
    CHECK(wait_until(stats_reached, &goal, 10000));
    pgq_worker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_OK, pgq_worker_stats_get, w, &s);
    CHECK(s.events == 12);
    CHECK(s.batches >= 4);
    pgq_worker_free(w);
    CHECK(atomic_load(&st.events) == 12); /* each event handled once */
    CHECK(atomic_load(&st.freed) == 1);
}

static int ticker_ticked(void *p) {
    pgq_ticker_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    if (pgq_ticker_stats_get(p, &s, NULL) != PGQ_STATUS_OK)
        return 0;
    return s.active == 1 && s.rounds > 0;
}

/* A ticker makes a worker's batches without anyone ticking by hand, and wakes it. */
static void test_ticker(void) {
    pgq_ticker_options *o = pgq_ticker_options_new();
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_ticker_options_set_ticker_period_ms, o, 0);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_ticker_period_ms, o, 20);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_retry_period_ms, o, 50);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_maint_period_ms, o, 1000);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_notify, o, true);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_name, o, S("c-test"));
    EXPECT(PGQ_STATUS_OK, pgq_ticker_options_set_eager, o, true, 0);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_options_set_eager, NULL, false, 0);
    pgq_ticker *t = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_ticker_start, CLIENT, o, &t);
    if (!t)
        return;
    CHECK(wait_until(ticker_ticked, t, 10000));

    setup_queue("tq", "w");
    EXPECT(PGQ_STATUS_OK, pgq_set_queue_config, CLIENT, S("tq"), S("ticker_max_lag"),
           S("10 milliseconds"));
    struct wstate st;
    wstate_init(&st, 5);
    pgq_worker_options *wo = pgq_worker_options_new();
    EXPECT(PGQ_STATUS_OK, pgq_worker_options_set_poll_interval_ms, wo, 60000); /* rely on NOTIFY */
    pgq_worker *w = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_worker_start, CLIENT, S("tq"), S("w"), wo, count_handler, &st,
           NULL, &w);
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data = text("t");
    for (int i = 0; i < 5; i++)
        EXPECT(PGQ_STATUS_OK, pgq_send, CLIENT, S("tq"), &ev, NULL);
    CHECK(wait_until(reached, &st, 15000));
    pgq_worker_free(w);

    pgq_ticker_stats s;
    memset(&s, 0, sizeof s);
    EXPECT(PGQ_STATUS_OUT_OF_RANGE, pgq_ticker_stats_get, t, &s);
    s.struct_size = sizeof s;
    EXPECT(PGQ_STATUS_OK, pgq_ticker_stats_get, t, &s);
    CHECK(s.struct_size == sizeof s);
    CHECK(s.ticks > 0);
    CHECK(s.last_tick_us > 0);
    CHECK(s.full_rounds >= 1); /* the first round is a full one */
    /* A caller compiled before full_rounds existed gets the fields it knows, and no more. */
    pgq_ticker_stats old;
    memset(&old, 0xAB, sizeof old);
    old.struct_size = offsetof(pgq_ticker_stats, full_rounds);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_stats_get, t, &old);
    CHECK(old.struct_size == offsetof(pgq_ticker_stats, full_rounds));
    CHECK(old.ticks > 0);
    CHECK(old.full_rounds == 0xABABABABABABABABull);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_stop, t);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_join, t);
    EXPECT(PGQ_STATUS_OK, pgq_ticker_join, t);
    pgq_ticker_free(t);

    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_start, NULL, NULL, &t);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_start, CLIENT, pgq_ticker_options_new(), NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_stop, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_join, NULL);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_stats_get, NULL, &s);
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_ticker_stats_get, t, NULL);
    pgq_ticker_free(NULL);
    pgq_ticker_options_free(NULL);
}

/* A client for a transaction pooler (PgBouncer pool_mode = transaction); the option also
 * works on a direct connection, as here. tests/pgbouncer.rs goes through a real PgBouncer. */
static void test_transaction_pooling(void) {
    EXPECT(PGQ_STATUS_NULL_POINTER, pgq_client_options_set_transaction_pooling, NULL, true);
    pgq_client_options *o = pgq_client_options_new();
    EXPECT(PGQ_STATUS_OK, pgq_client_options_set_transaction_pooling, o, true);
    pgq_client *pc = NULL;
    EXPECT(PGQ_STATUS_OK, pgq_client_connect, DSN, strlen(DSN), o, &pc);
    if (!pc)
        return;
    /* The ticker needs a direct connection (a session advisory lock): refused. */
    pgq_ticker *t = NULL;
    EXPECT(PGQ_STATUS_INVALID_INPUT, pgq_ticker_start, pc, NULL, &t);
    CHECK(t == NULL);
    setup_queue("tpq", "c1");
    pgq_new_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data = text("0");
    EXPECT(PGQ_STATUS_OK, pgq_send, pc, S("tpq"), &ev, NULL);
    int seen[1] = {0};
    CHECK(drain("tpq", "c1", seen, 1) == 1);
    CHECK(seen[0] == 1);
    pgq_client_free(pc);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DSN\n", argv[0]);
        return 2;
    }
    DSN = argv[1];
    pgq_error *err = NULL;
    pgq_client_options *o = pgq_client_options_new();
    pgq_client_options_set_pool_size(o, 4, NULL);
    if (pgq_client_connect(DSN, strlen(DSN), o, &CLIENT, &err) != PGQ_STATUS_OK ||
        pgq_install(CLIENT, &err) != PGQ_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", pgq_error_message(err));
        pgq_error_free(err);
        pgq_client_free(CLIENT);
        return 100;
    }

    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"version", test_version},
        {"null_pointers", test_null_pointers},
        {"invalid_utf8_and_lengths", test_invalid_utf8_and_lengths},
        {"out_of_range", test_out_of_range},
        {"admin_and_errors", test_admin_and_errors},
        {"produce_consume_retry", test_produce_consume_retry},
        {"finish_next", test_finish_next},
        {"transactions", test_transactions},
        {"threads", test_threads},
        {"panic_boundary", test_panic_boundary},
        {"logger", test_logger},
        {"dead_server", test_dead_server},
        {"coop_pull", test_coop_pull},
        {"worker", test_worker},
        {"worker_handler_error", test_worker_handler_error},
        {"worker_stop_from_handler", test_worker_stop_from_handler},
        {"worker_start_errors", test_worker_start_errors},
        {"worker_coop", test_worker_coop},
        {"ticker", test_ticker},
        {"transaction_pooling", test_transaction_pooling},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        failures_in_test = 0;
        tests[i].fn();
        printf("%s %s\n", failures_in_test ? "FAIL" : "ok", tests[i].name);
        failed += failures_in_test != 0;
    }
    pgq_client_free(CLIENT);
    printf("%d of %d C tests failed\n", failed, (int)(sizeof tests / sizeof tests[0]));
    return failed > 100 ? 100 : failed;
}
