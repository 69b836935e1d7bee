//! Links the system SpeexDSP (Debian `libspeexdsp-dev`, installed by `scripts/bootstrap`). No
//! source is bundled or downloaded: the library is small, stable (1.2.x API unchanged since 2014)
//! and packaged everywhere we run.
fn main() {
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("1.2")
        .probe("speexdsp")
    {
        panic!("libspeexdsp not found through pkg-config ({e}); run scripts/bootstrap or `apt-get install libspeexdsp-dev`");
    }
}
