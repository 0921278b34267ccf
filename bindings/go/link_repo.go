//go:build !pgq_pkgconfig && !pgq_release

package pgq

// By default the package links the repository's own debug build of libpgq statically
// (`cargo build` at the repository root produces target/debug/libpgq.a and the header is
// include/pgq.h), so `go test` and programs built in this checkout need nothing at run time.
// The extra libraries are what Rust's standard library needs on Linux (rustc
// --print native-static-libs). With `-tags pgq_release` it links target/release/libpgq.a
// instead (`cargo build --release`; use it for benchmarks). Build with `-tags pgq_pkgconfig`
// to link an installed shared libpgq found through pkg-config (see link_pkgconfig.go).

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: ${SRCDIR}/../../target/debug/libpgq.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
