//go:build !pgq_pkgconfig

package pgq

// By default the package links against the repository's own debug build of libpgq
// (`cargo build` at the repository root produces target/debug/libpgq.so), with an rpath so
// that `go test` and programs built in this checkout find it at run time. Build with
// `-tags pgq_pkgconfig` to use an installed libpgq found through pkg-config instead
// (see link_pkgconfig.go).

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -L${SRCDIR}/../../target/debug -Wl,-rpath,${SRCDIR}/../../target/debug -lpgq
import "C"
