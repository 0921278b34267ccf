/*
 * producer: install PGQ, create a queue and send events three ways (one by one, in one
 * COPY batch, and inside a transaction together with other SQL).
 *
 *   producer DSN QUEUE COUNT
 *
 * Sends COUNT events with data "1" .. "COUNT" (COUNT = 0 only installs and creates the
 * queue). Prints one line per step and "sent COUNT events to QUEUE" at the end.
 *
 * Build: cc producer.c $(pkg-config --cflags --libs pgq)
 */
#include <pgq.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pgq_str text(const char *s) {
    pgq_str v;
    v.data = s;
    v.len = strlen(s);
    return v;
}

/* Prints and frees the error of a failed call; returns 1 so main can `return fail(...)`. */
static int fail(const char *what, pgq_status st, pgq_error *err) {
    fprintf(stderr, "producer: %s failed: %s (%s", what, pgq_error_message(err),
            pgq_status_name(st));
    if (pgq_error_sqlstate(err))
        fprintf(stderr, ", SQLSTATE %s", pgq_error_sqlstate(err));
    fprintf(stderr, ")\n");
    pgq_error_free(err);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DSN QUEUE COUNT\n", argv[0]);
        return 2;
    }
    const char *dsn = argv[1], *queue = argv[2];
    long count = strtol(argv[3], NULL, 10);
    size_t qlen = strlen(queue);
    if (count < 0) {
        fprintf(stderr, "producer: COUNT must be >= 0\n");
        return 2;
    }

    pgq_client *client = NULL;
    pgq_error *err = NULL;
    pgq_status st;
    int rc = 0;

    pgq_client_options *opts = pgq_client_options_new();
    pgq_client_options_set_pool_size(opts, 2, NULL);
    st = pgq_client_connect(dsn, strlen(dsn), opts, &client, &err); /* consumes opts */
    if (st != PGQ_STATUS_OK)
        return fail("connect", st, err);

    st = pgq_install(client, &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("install", st, err);
        goto out;
    }
    bool created = false;
    st = pgq_create_queue(client, queue, qlen, &created, &err);
    if (st != PGQ_STATUS_OK) {
        rc = fail("create queue", st, err);
        goto out;
    }
    printf("queue %s %s\n", queue, created ? "created" : "exists");

    /* Events 1 .. count: the first third one by one, the next third with one COPY, the
     * rest in a transaction. */
    long one = count / 3, many = count / 3, in_tx = count - one - many, n = 0;
    char buf[32];

    for (long i = 0; i < one; i++) {
        pgq_new_event ev;
        memset(&ev, 0, sizeof ev);
        snprintf(buf, sizeof buf, "%ld", ++n);
        ev.type = text("example.single");
        ev.data = text(buf);
        int64_t id = 0;
        st = pgq_send(client, queue, qlen, &ev, &id, &err);
        if (st != PGQ_STATUS_OK) {
            rc = fail("send", st, err);
            goto out;
        }
    }
    printf("sent %ld one by one\n", one);

    if (many > 0) {
        pgq_new_event *evs = calloc((size_t)many, sizeof *evs);
        char (*data)[32] = calloc((size_t)many, sizeof *data);
        if (!evs || !data) {
            free(evs);
            free(data);
            fprintf(stderr, "producer: out of memory\n");
            rc = 1;
            goto out;
        }
        for (long i = 0; i < many; i++) {
            snprintf(data[i], sizeof data[i], "%ld", ++n);
            evs[i].type = text("example.bulk");
            evs[i].data = text(data[i]);
            evs[i].extra1 = text("bulk"); /* extra2..4 stay {NULL, 0}: SQL NULL */
        }
        st = pgq_send_many(client, queue, qlen, evs, (size_t)many, &err);
        free(evs);
        free(data);
        if (st != PGQ_STATUS_OK) {
            rc = fail("send_many", st, err);
            goto out;
        }
    }
    printf("sent %ld with COPY\n", many);

    if (in_tx > 0) {
        pgq_tx *tx = NULL;
        st = pgq_tx_begin(client, &tx, &err);
        if (st != PGQ_STATUS_OK) {
            rc = fail("tx_begin", st, err);
            goto out;
        }
        const char *sql = "create temp table example_orders (id int); "
                          "insert into example_orders values (1)";
        st = pgq_tx_execute(tx, sql, strlen(sql), &err);
        for (long i = 0; st == PGQ_STATUS_OK && i < in_tx; i++) {
            pgq_new_event ev;
            memset(&ev, 0, sizeof ev);
            snprintf(buf, sizeof buf, "%ld", ++n);
            ev.type = text("example.tx");
            ev.data = text(buf);
            st = pgq_tx_send(tx, queue, qlen, &ev, NULL, &err);
        }
        if (st != PGQ_STATUS_OK) {
            pgq_tx_rollback(tx);
            rc = fail("send in transaction", st, err);
            goto out;
        }
        st = pgq_tx_commit(tx, &err); /* frees tx, also on failure */
        if (st != PGQ_STATUS_OK) {
            rc = fail("commit", st, err);
            goto out;
        }
    }
    printf("sent %ld in a transaction\n", in_tx);
    printf("sent %ld events to %s\n", n, queue);

out:
    pgq_client_free(client);
    return rc;
}
