//go:build pgq_pkgconfig

package pgq

// With `-tags pgq_pkgconfig` the package compiles and links against an installed libpgq,
// located through its pkg-config file (pgq.pc): `go build -tags pgq_pkgconfig`. Point
// PKG_CONFIG_PATH at the directory holding pgq.pc when it is not in a default location.

// #cgo pkg-config: pgq
import "C"
