//! Gives the C shared library its SONAME on Linux (`libpgq.so.0`, the ABI major version),
//! so programs linked against it keep working across compatible library updates and the
//! installed `libpgq.so.0 -> libpgq.so.0.x.y` symlink is what they load.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpgq.so.0");
    }
}
