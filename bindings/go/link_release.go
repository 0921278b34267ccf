//go:build pgq_release && !pgq_pkgconfig

package pgq

// With `-tags pgq_release` the package links the repository's release build of libpgq
// statically (`cargo build --release` produces target/release/libpgq.a): what benchmarks
// should measure. See link_repo.go.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: ${SRCDIR}/../../target/release/libpgq.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
