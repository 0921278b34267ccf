// Proves that pgq.h works from C++: it compiles with g++ -Wall -Wextra -Werror -pedantic,
// links (extern "C" names), and the enum and macros behave. Run by tests/c/run.sh.
#include <pgq.h>

#include <cstdio>
#include <cstring>
#include <string>

int main() {
    if (std::string(pgq_version()) != PGQ_VERSION || pgq_abi_version() != PGQ_ABI_VERSION) {
        std::fprintf(stderr, "version mismatch: %s / %u\n", pgq_version(), pgq_abi_version());
        return 1;
    }
    pgq_error *err = nullptr;
    pgq_status st = pgq_install(nullptr, &err);
    bool ok = st == PGQ_STATUS_NULL_POINTER && pgq_error_status(err) == st &&
              std::strlen(pgq_error_message(err)) > 0;
    pgq_error_free(err);
    pgq_new_event ev{};
    ev.type = pgq_str{"t", 1};
    (void)ev;
    std::printf("C++ header check %s (libpgq %s)\n", ok ? "ok" : "FAILED", pgq_version());
    return ok ? 0 : 1;
}
