/*
 * worker_consumer: consume with a callback worker, with a ticker service running in the
 * same process (so batches are cut without pgqd).
 *
 *   worker_consumer DSN QUEUE CONSUMER EXPECTED [TIMEOUT_SECONDS]
 *
 * Registers CONSUMER, starts a ticker and a worker whose handler prints every event as
 * "event ID type=TYPE data=DATA", waits until EXPECTED events were handled (default
 * timeout 30 s), stops both and prints "consumed N events" and the worker's counters.
 * EXPECTED = 0 only registers the consumer. Exits with 1 on timeout or error.
 *
 * The handler runs on the worker's thread; main waits on a condition variable that the
 * handler signals.
 *
 * Build: cc worker_consumer.c $(pkg-config --cflags --libs pgq) -lpthread
 */
#define _POSIX_C_SOURCE 200809L
#include <pgq.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct progress {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    long events;
};

/* Called once per batch on the worker thread. Returning 0 finishes the batch. */
static int32_t handle_batch(void *user_data, pgq_batch *batch) {
    struct progress *p = user_data;
    const pgq_event *ev = NULL;
    pgq_error *err = NULL;
    long n = 0;
    pgq_status st;
    while ((st = pgq_batch_next_event(batch, &ev, &err)) == PGQ_STATUS_OK && ev) {
        pgq_str type = pgq_event_type(ev), data = pgq_event_data(ev);
        printf("event %lld type=%.*s data=%.*s\n", (long long)pgq_event_id(ev),
               (int)type.len, type.data ? type.data : "", (int)data.len,
               data.data ? data.data : "");
        n++;
    }
    if (st != PGQ_STATUS_OK) {
        fprintf(stderr, "worker_consumer: reading batch %lld: %s\n",
                (long long)pgq_batch_id(batch), pgq_error_message(err));
        pgq_error_free(err);
        return 1; /* not finished: the batch is delivered again */
    }
    fflush(stdout);
    pthread_mutex_lock(&p->lock);
    p->events += n;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static int fail(const char *what, pgq_status st, pgq_error *err) {
    fprintf(stderr, "worker_consumer: %s failed: %s (%s)\n", what, pgq_error_message(err),
            pgq_status_name(st));
    pgq_error_free(err);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s DSN QUEUE CONSUMER EXPECTED [TIMEOUT_SECONDS]\n", argv[0]);
        return 2;
    }
    const char *dsn = argv[1], *queue = argv[2], *name = argv[3];
    long expected = strtol(argv[4], NULL, 10);
    long timeout_s = argc == 6 ? strtol(argv[5], NULL, 10) : 30;

    struct progress p;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.changed, NULL);
    p.events = 0;

    pgq_client *client = NULL;
    pgq_ticker *ticker = NULL;
    pgq_worker *worker = NULL;
    pgq_error *err = NULL;
    pgq_status st;
    int rc = 0;

    st = pgq_client_connect(dsn, strlen(dsn), NULL, &client, &err);
    if (st != PGQ_STATUS_OK)
        return fail("connect", st, err);
    bool created = false;
    st = pgq_register_consumer(client, queue, strlen(queue), name, strlen(name), &created,
                               &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("register", st, err);
        goto out;
    }
    printf("consumer %s %s on %s\n", name, created ? "registered" : "already registered",
           queue);
    if (expected == 0)
        goto out;

    /* A ticker in this process; in production one ticker (or pgqd) per database is
     * enough, and several may run: one is active, the others stand by. */
    pgq_ticker_options *topts = pgq_ticker_options_new();
    pgq_ticker_options_set_ticker_period_ms(topts, 100, NULL);
    st = pgq_ticker_start(client, topts, &ticker, &err); /* consumes topts */
    if (st != PGQ_STATUS_OK) {
        rc = fail("ticker start", st, err);
        goto out;
    }

    pgq_worker_options *wopts = pgq_worker_options_new();
    pgq_worker_options_set_fetch_size(wopts, 500, NULL);
    /* No user_data_free: `p` lives on main's stack until after pgq_worker_free. */
    st = pgq_worker_start(client, queue, strlen(queue), name, strlen(name), wopts,
                          handle_batch, &p, NULL, &worker, &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("worker start", st, err);
        goto out;
    }

    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_s;
    pthread_mutex_lock(&p.lock);
    while (p.events < expected) {
        if (pthread_cond_timedwait(&p.changed, &p.lock, &deadline) == ETIMEDOUT)
            break;
    }
    long got = p.events;
    pthread_mutex_unlock(&p.lock);
    if (got < expected) {
        fprintf(stderr, "worker_consumer: timed out with %ld of %ld events\n", got, expected);
        rc = 1;
    }

    pgq_worker_stop(worker, NULL);
    st = pgq_worker_join(worker, &err);
    if (st != PGQ_STATUS_OK)
        rc = fail("worker", st, err);
    pgq_worker_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    if (pgq_worker_stats_get(worker, &stats, NULL) == PGQ_STATUS_OK)
        printf("worker: %llu batches, %llu handler errors\n",
               (unsigned long long)stats.batches, (unsigned long long)stats.handler_errors);
    printf("consumed %ld events\n", got);

out:
    pgq_worker_free(worker);
    pgq_ticker_free(ticker);
    pgq_client_free(client);
    pthread_cond_destroy(&p.changed);
    pthread_mutex_destroy(&p.lock);
    return rc;
}
