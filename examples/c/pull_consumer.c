/*
 * pull_consumer: register a consumer and pull batches until an expected number of events
 * has arrived.
 *
 *   pull_consumer DSN QUEUE CONSUMER EXPECTED [TIMEOUT_SECONDS]
 *
 * Prints every event as "event ID type=TYPE data=DATA extra1=EXTRA1 retry=N" (NULL for SQL
 * NULL) and at the end "consumed N events in M batches". EXPECTED = 0 only registers the
 * consumer (events sent after that are delivered to it). Exits with 1 if fewer than
 * EXPECTED events arrived before the timeout (default 30 s).
 *
 * Batches are cut by ticks. This example ticks the queue itself when it finds no batch, so
 * it runs without a ticker; in production run a ticker service (pgqd, or pgq_ticker_start).
 *
 * Build: cc pull_consumer.c $(pkg-config --cflags --libs pgq)
 */
#include <pgq.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(const char *what, pgq_status st, pgq_error *err) {
    fprintf(stderr, "pull_consumer: %s failed: %s (%s)\n", what, pgq_error_message(err),
            pgq_status_name(st));
    pgq_error_free(err);
    return 1;
}

/* Prints a text view; the view is not NUL-terminated, so print by length. */
static void print_str(const char *name, pgq_str s) {
    if (s.data)
        printf(" %s=%.*s", name, (int)s.len, s.data);
    else
        printf(" %s=NULL", name);
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s DSN QUEUE CONSUMER EXPECTED [TIMEOUT_SECONDS]\n", argv[0]);
        return 2;
    }
    const char *dsn = argv[1], *queue = argv[2], *name = argv[3];
    long expected = strtol(argv[4], NULL, 10);
    long timeout_s = argc == 6 ? strtol(argv[5], NULL, 10) : 30;
    size_t qlen = strlen(queue);

    pgq_client *client = NULL;
    pgq_consumer *consumer = NULL;
    pgq_error *err = NULL;
    pgq_status st;
    int rc = 0;
    long events = 0, batches = 0;

    st = pgq_client_connect(dsn, strlen(dsn), NULL, &client, &err);
    if (st != PGQ_STATUS_OK)
        return fail("connect", st, err);
    st = pgq_consumer_new(client, queue, qlen, name, strlen(name), &consumer, &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("consumer_new", st, err);
        goto out;
    }
    bool created = false;
    st = pgq_consumer_register(consumer, &created, &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("register", st, err);
        goto out;
    }
    printf("consumer %s %s on %s\n", name, created ? "registered" : "already registered",
           queue);

    time_t deadline = time(NULL) + timeout_s;
    while (events < expected) {
        if (time(NULL) > deadline) {
            fprintf(stderr, "pull_consumer: timed out with %ld of %ld events\n", events,
                    expected);
            rc = 1;
            break;
        }
        pgq_batch *batch = NULL;
        st = pgq_consumer_next_batch(consumer, 500, &batch, &err);
        if (st != PGQ_STATUS_OK) {
            rc = fail("next_batch", st, err);
            break;
        }
        if (!batch) {
            /* No batch yet: cut one (a ticker's job, see above). */
            st = pgq_force_tick(client, queue, qlen, &err);
            if (st == PGQ_STATUS_OK)
                st = pgq_tick_queue(client, queue, qlen, NULL, &err);
            if (st != PGQ_STATUS_OK) {
                rc = fail("tick", st, err);
                break;
            }
            continue;
        }
        batches++;
        const pgq_event *ev = NULL;
        while ((st = pgq_batch_next_event(batch, &ev, &err)) == PGQ_STATUS_OK && ev) {
            printf("event %lld", (long long)pgq_event_id(ev));
            print_str("type", pgq_event_type(ev));
            print_str("data", pgq_event_data(ev));
            print_str("extra1", pgq_event_extra1(ev));
            printf(" retry=%d\n", (int)pgq_event_retry(ev));
            events++;
        }
        if (st != PGQ_STATUS_OK) {
            pgq_batch_free(batch); /* rolled back: delivered again */
            rc = fail("next_event", st, err);
            break;
        }
        st = pgq_batch_finish(batch, &err); /* frees batch */
        if (st != PGQ_STATUS_OK) {
            rc = fail("finish", st, err);
            break;
        }
    }
    printf("consumed %ld events in %ld batches\n", events, batches);

out:
    pgq_consumer_free(consumer);
    pgq_client_free(client);
    return rc;
}
