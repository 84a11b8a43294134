//! Link the shim as a position-dependent executable (`-no-pie`).
//!
//! One shim runs per container (per pod under the CRI), all from this one
//! file. Position-independent, every process gets the binary's pointer data
//! (`.data.rel.ro`: vtables, string tables, panic locations — ~400 kB)
//! relocated into private pages, since each is loaded at its own address;
//! position-dependent, those pages come from the file and are shared by every
//! shim on the node. Measured with `scripts/bench density 200`: 343 kB PSS per
//! idle container against 649 kB. The cost is the randomisation of the shim's
//! own image (its heap, stacks and shared libraries stay randomised), which
//! Debian's containerd, containerd-shim-runc-v2 and runc also do without.
//!
//! `scripts/build`, which the tests, the demo and the benchmarks use, goes
//! one step further and links it statically as well (`crt-static`, which a
//! build script cannot ask for): no loader, and libc's code at a fixed
//! address too, as the Go shims' whole runtime is. A plain `cargo build`
//! still gives a working, dynamically linked shim.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
