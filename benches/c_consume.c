/* No-op pull consumer over the libpgq C ABI, for the benchmarks (benches/bench/consume.rs).
 *
 *     c_consume DSN QUEUE CONSUMER FETCH_SIZE
 *
 * Drains the consumer's backlog (pgq_consumer_next_batch with timeout 0 until it returns no
 * batch), touching every field of every event, then prints one JSON line: events, batches,
 * secs, cpu_secs, peak_rss_kib. It then keeps its connections open until stdin is closed,
 * so that the benchmark can read the CPU time of its server backends. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pgq.h"

static int fail(const char *what, pgq_error *err) {
    fprintf(stderr, "c_consume: %s: %s\n", what, err ? pgq_error_message(err) : "?");
    pgq_error_free(err);
    return 1;
}

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: c_consume DSN QUEUE CONSUMER FETCH_SIZE\n");
        return 2;
    }
    const char *dsn = argv[1], *queue = argv[2], *name = argv[3];
    uint32_t fetch = (uint32_t)strtoul(argv[4], NULL, 10);
    pgq_error *err = NULL;
    pgq_client *client = NULL;
    pgq_consumer *consumer = NULL;

    double t0 = now_secs();
    pgq_client_options *opts = pgq_client_options_new();
    /* Two: the next batch is read ahead on the second while one is handled. */
    pgq_client_options_set_pool_size(opts, 2, NULL);
    if (pgq_client_connect(dsn, strlen(dsn), opts, &client, &err) != PGQ_STATUS_OK)
        return fail("connect", err);
    if (pgq_consumer_new(client, queue, strlen(queue), name, strlen(name), &consumer, &err) !=
        PGQ_STATUS_OK)
        return fail("consumer", err);
    if (pgq_consumer_set_fetch_size(consumer, fetch, &err) != PGQ_STATUS_OK)
        return fail("fetch size", err);

    uint64_t events = 0, batches = 0, sink = 0;
    pgq_batch *batch = NULL;
    if (pgq_consumer_next_batch(consumer, 0, &batch, &err) != PGQ_STATUS_OK)
        return fail("next batch", err);
    while (batch) {
        const pgq_event *ev = NULL;
        for (;;) {
            if (pgq_batch_next_event(batch, &ev, &err) != PGQ_STATUS_OK)
                return fail("next event", err);
            if (!ev)
                break;
            /* The same work as the Rust consumers: look at every field. */
            sink += (uint64_t)pgq_event_id(ev) + (uint64_t)pgq_event_time_us(ev) +
                    (uint64_t)pgq_event_txid(ev) + (uint64_t)pgq_event_retry(ev) +
                    pgq_event_type(ev).len + pgq_event_data(ev).len + pgq_event_extra1(ev).len +
                    pgq_event_extra2(ev).len + pgq_event_extra3(ev).len + pgq_event_extra4(ev).len;
            events++;
        }
        /* Finishes and frees this batch, and takes the next one (NULL: none yet). */
        pgq_batch *next = NULL;
        if (pgq_batch_finish_next(batch, consumer, &next, &err) != PGQ_STATUS_OK)
            return fail("finish", err);
        batch = next;
        batches++;
    }
    double secs = now_secs() - t0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"events\": %llu, \"batches\": %llu, \"secs\": %.6f, \"cpu_secs\": %.3f, "
           "\"peak_rss_kib\": %ld, \"sink\": %llu}\n",
           (unsigned long long)events, (unsigned long long)batches, secs, cpu, ru.ru_maxrss,
           (unsigned long long)(sink & 1));
    fflush(stdout);

    /* Hold the connection until the benchmark has read our backend's CPU time. */
    char buf[64];
    while (fgets(buf, sizeof buf, stdin))
        ;
    pgq_consumer_free(consumer);
    pgq_client_free(client);
    return 0;
}
